//! Broker-only nodes follow the metadata by fetching committed batches (or a snapshot, when they
//! are too far behind) from the controllers, replaying them with the same `replay` into their own
//! image, and handing each new image to the publisher. They never vote and keep no raft log: on
//! restart they fetch again from the start, which a snapshot keeps cheap. A snapshot comes a
//! bounded chunk per fetch, back to back, until it is whole.

use std::time::Duration;

use skald_controller::follower::{MetadataFollower, MetadataUpdate};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::publisher::Publisher;
use super::ControlError;
use crate::controller_plane::client::RemoteControllers;

/// How long to wait before asking again once caught up: the bound on how stale a broker-only
/// node's metadata is.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The most metadata bytes one fetch asks for.
const FETCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Fetches until the controllers have nothing newer, or `wait` passes.
pub async fn catch_up(
    remote: &RemoteControllers,
    follower: &mut MetadataFollower,
    wait: Duration,
) -> Result<(), ControlError> {
    let deadline = Instant::now() + wait;
    loop {
        match remote
            .fetch_metadata(follower.next_fetch(), FETCH_BYTES_MAX)
            .await
        {
            Ok(MetadataUpdate::UpToDate) if remote.leader().is_some() => return Ok(()),
            // The rest of a snapshot is asked for at once.
            Ok(update @ MetadataUpdate::SnapshotChunk { .. }) => {
                follower.apply(update);
                if Instant::now() < deadline {
                    continue;
                }
            }
            Ok(update) => {
                follower.apply(update);
            }
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(err) => tracing::debug!("metadata fetch failed: {err}"),
        }
        if Instant::now() >= deadline {
            return Err(ControlError::Timeout);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Follows the metadata until shutdown, publishing every change.
pub async fn follow(
    remote: RemoteControllers,
    mut follower: MetadataFollower,
    publisher: Publisher,
    mut stop: broadcast::Receiver<()>,
) {
    loop {
        match remote
            .fetch_metadata(follower.next_fetch(), FETCH_BYTES_MAX)
            .await
        {
            Ok(MetadataUpdate::UpToDate) => {}
            Ok(update) => {
                // Published even when only the index moved (a leader's no-op entry): forwarded
                // operations wait for this broker's index to reach the controller's.
                let before = follower.applied_index();
                follower.apply(update);
                if follower.applied_index() != before {
                    publisher.publish(follower.image(), follower.applied_index(), Vec::new());
                }
                continue;
            }
            Err(err) => tracing::debug!("metadata fetch failed: {err}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = stop.recv() => return,
        }
    }
}
