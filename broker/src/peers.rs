//! Connections to other brokers' client listeners for the requests brokers send each other
//! (KIP-890 verification with a transaction's coordinator, WriteTxnMarkers to partition
//! leaders): one kept per broker and lent out for one request at a time. Requests to the same
//! broker running at once open their own, and one of them is kept after; a broken connection,
//! or one to an address the broker no longer advertises, is replaced.

use std::collections::HashMap;
use std::time::Duration;

use skald_client::connection::Connection;

/// The kept connections, by broker id.
#[derive(Default)]
pub struct PeerConnections {
    kept: tokio::sync::Mutex<HashMap<i32, Connection>>,
}

impl std::fmt::Debug for PeerConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnections").finish_non_exhaustive()
    }
}

impl PeerConnections {
    /// A connection to broker `broker` at `address`: the kept one if it is whole and goes there,
    /// else a new one, connected within `timeout`. Give it back with
    /// [`PeerConnections::give_back`] after a request that went well.
    pub async fn take(
        &self,
        broker: i32,
        address: &str,
        timeout: Duration,
    ) -> Result<Connection, String> {
        let kept = self
            .kept
            .lock()
            .await
            .remove(&broker)
            .filter(|c| c.addr() == address && !c.is_broken());
        match kept {
            Some(connection) => Ok(connection),
            None => tokio::time::timeout(timeout, Connection::connect(address))
                .await
                .map_err(|_| format!("connecting to broker {broker} at {address} timed out"))?
                .map_err(|err| err.to_string()),
        }
    }

    /// Keeps `connection` for the next request to `broker` (one broken meanwhile is dropped).
    pub async fn give_back(&self, broker: i32, connection: Connection) {
        if !connection.is_broken() {
            self.kept.lock().await.insert(broker, connection);
        }
    }
}
