//! The metadata publisher: brings this node's hosted partitions and served image in line with each
//! newly committed [`MetadataImage`], then completes whatever was waiting for it.
//!
//! It runs on its own thread so creating or deleting thousands of partition logs never stalls the
//! raft driver (whose ticks keep the quorum's leadership). Images are coalesced: when several
//! arrive while one is being applied, only the newest is applied, since each image is complete.
//! Completions run only after their image (or a newer one) is served, so a client that sees a
//! CreateTopics reply finds the topic on this node.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use skald_controller::MetadataImage;

/// Runs once the image it came with is served.
pub type Completion = Box<dyn FnOnce() + Send>;

/// Applies an image on this node (the broker's `publish_image`).
pub type Apply = Box<dyn FnMut(Arc<MetadataImage>, u64) + Send>;

struct Published {
    image: Arc<MetadataImage>,
    applied_index: u64,
    completions: Vec<Completion>,
}

/// A handle to the publisher thread.
#[derive(Clone)]
pub struct Publisher {
    queue: Sender<Published>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

impl Publisher {
    pub fn start(apply: Apply) -> std::io::Result<Publisher> {
        let (queue, inbox) = mpsc::channel();
        std::thread::Builder::new()
            .name("skald-metadata-publisher".into())
            .spawn(move || run(inbox, apply))?;
        Ok(Publisher { queue })
    }

    /// Queues an image and what waits for it. Unbounded, but each entry is one committed batch
    /// of the quorum, which the driver produces one operation at a time.
    pub fn publish(
        &self,
        image: Arc<MetadataImage>,
        applied_index: u64,
        completions: Vec<Completion>,
    ) {
        if self
            .queue
            .send(Published {
                image,
                applied_index,
                completions,
            })
            .is_err()
        {
            tracing::error!("metadata publisher stopped; an image was not applied");
        }
    }
}

fn run(inbox: Receiver<Published>, mut apply: Apply) {
    while let Ok(first) = inbox.recv() {
        let mut newest = first.image;
        let mut applied_index = first.applied_index;
        let mut completions = first.completions;
        for more in inbox.try_iter() {
            if more.applied_index >= applied_index {
                newest = more.image;
                applied_index = more.applied_index;
            }
            completions.extend(more.completions);
        }
        apply(newest, applied_index);
        for completion in completions {
            completion();
        }
    }
}
