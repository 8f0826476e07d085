//! AddOffsetsToTxn: a transactional producer about to commit a group's offsets in its
//! transaction (`sendOffsetsToTransaction`); the group's `__consumer_offsets` partition joins the
//! transaction, so its COMMIT or ABORT marker decides those offsets too.

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use skald_controller::names::CONSUMER_OFFSETS_TOPIC;

use crate::api::find_coordinator::{ensure_offsets_topic, Coordinators};
use crate::broker::Broker;

pub async fn handle(broker: &Arc<Broker>, body: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let outcome = match ensure_offsets_topic(Coordinators::of(broker)).await {
        Err(error) => Err(error),
        Ok(()) => {
            let partition = broker.groups.partition_for(&body.group_id);
            broker
                .txns
                .add_partitions(
                    broker,
                    &body.transactional_id,
                    body.producer_id.0,
                    body.producer_epoch,
                    vec![(CONSUMER_OFFSETS_TOPIC.to_owned(), partition)],
                )
                .await
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(outcome.err().map_or(0, |e| e.code()))
}
