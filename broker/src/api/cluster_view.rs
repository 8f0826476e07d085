//! [`ClusterView`]: what the handlers that answer from metadata alone (DescribeCluster,
//! DescribeConfigs) reach, instead of the whole broker: the metadata image the request is
//! answered from, the broker's configuration and the cluster id. The dispatch builds one per
//! request ([`ClusterView::of`]); a test builds one from an image it replayed and a
//! configuration from properties.

use skald_controller::MetadataImage;

use crate::broker::Broker;
use crate::config::ServerConfig;

#[derive(Debug, Clone, Copy)]
pub struct ClusterView<'a> {
    pub image: &'a MetadataImage,
    pub config: &'a ServerConfig,
    pub cluster_id: &'a str,
}

impl<'a> ClusterView<'a> {
    /// `broker`'s configuration and cluster id, answering from `image`.
    pub fn of(broker: &'a Broker, image: &'a MetadataImage) -> ClusterView<'a> {
        ClusterView {
            image,
            config: &broker.config,
            cluster_id: &broker.cluster_id,
        }
    }

    /// The node id clients should send controller requests to.
    pub fn controller_id_for_clients(&self) -> i32 {
        crate::broker::controller_id_for_clients(self.config)
    }
}
