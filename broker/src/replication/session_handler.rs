//! The follower's side of a fetch session (Kafka's `FetchSessionHandler`): one per leader. Each
//! round the fetcher hands over every partition it wants fetched with its current fetch position;
//! the handler sends all of them in a full fetch when there is no session, and otherwise only
//! those added or whose position changed, forgetting those that left. Any session error or lost
//! answer starts over with a full fetch, as Kafka's client does.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::ResponseError;

use crate::fetch_session::{next_epoch, INITIAL_EPOCH, INVALID_SESSION_ID};

/// A followed partition: topic name and index.
pub type PartitionKey = (String, i32);

/// What the next fetch sends about its session, and which partitions it lists.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionFetch {
    pub session_id: i32,
    pub epoch: i32,
    pub topics: Vec<FetchTopic>,
    pub forgotten: Vec<ForgottenTopic>,
}

#[derive(Debug, Default)]
pub struct FetchSessionHandler {
    /// The session the leader holds (0: none), and the epoch the next fetch carries (0: full).
    session_id: i32,
    epoch: i32,
    /// What the leader's session holds for each partition, as last sent.
    session_partitions: HashMap<PartitionKey, FetchPartition>,
}

impl FetchSessionHandler {
    /// Kafka's `Builder.build`: the next fetch, given every partition wanted now.
    pub fn build(&mut self, wanted: BTreeMap<PartitionKey, FetchPartition>) -> SessionFetch {
        if self.epoch == INITIAL_EPOCH {
            let topics = by_topic(wanted.iter().map(|(key, data)| (key, data.clone())));
            self.session_partitions = wanted.into_iter().collect();
            return SessionFetch {
                session_id: self.session_id,
                epoch: self.epoch,
                topics,
                forgotten: Vec::new(),
            };
        }
        let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        let mut gone = Vec::new();
        for key in self.session_partitions.keys() {
            if !wanted.contains_key(key) {
                gone.push(key.clone());
            }
        }
        for key in &gone {
            self.session_partitions.remove(key);
            forgotten.entry(key.0.as_str()).or_default().push(key.1);
        }
        let forgotten = forgotten
            .into_iter()
            .map(|(topic, partitions)| {
                ForgottenTopic::default()
                    .with_topic(crate::api::topic_name(topic))
                    .with_partitions(partitions)
            })
            .collect();
        let mut changed = Vec::new();
        for (key, data) in wanted {
            match self.session_partitions.get(&key) {
                Some(sent) if *sent == data => {}
                _ => {
                    self.session_partitions.insert(key.clone(), data.clone());
                    changed.push((key, data));
                }
            }
        }
        SessionFetch {
            session_id: self.session_id,
            epoch: self.epoch,
            topics: by_topic(changed.iter().map(|(key, data)| (key, data.clone()))),
            forgotten,
        }
    }

    /// Kafka's `handleResponse`: moves the session on after an answer, or starts over after a
    /// session error (the answer's partitions are then not to be used: it carries none).
    pub fn handle_response(&mut self, response: &FetchResponse) {
        if response.error_code != 0 {
            if response.error_code == ResponseError::FetchSessionIdNotFound.code() {
                self.session_id = INVALID_SESSION_ID;
            }
            // Otherwise the next full fetch closes the session it names and opens another.
            self.epoch = INITIAL_EPOCH;
            return;
        }
        if response.session_id == INVALID_SESSION_ID {
            // None created (the leader's cache is full), or the leader closed it.
            (self.session_id, self.epoch) = (INVALID_SESSION_ID, INITIAL_EPOCH);
        } else if self.epoch == INITIAL_EPOCH {
            (self.session_id, self.epoch) = (response.session_id, next_epoch(INITIAL_EPOCH));
        } else {
            self.epoch = next_epoch(self.epoch);
        }
    }

    /// Kafka's `handleError`: the answer was lost, so the leader's session may be a step ahead;
    /// the next fetch is full and replaces it.
    pub fn handle_error(&mut self) {
        self.epoch = INITIAL_EPOCH;
    }
}

/// Groups partitions by topic (keys come sorted, so each topic once).
fn by_topic<'a>(
    partitions: impl Iterator<Item = (&'a PartitionKey, FetchPartition)>,
) -> Vec<FetchTopic> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((topic, _), data) in partitions {
        if topics
            .last()
            .is_none_or(|last| last.topic.0.as_str() != topic)
        {
            topics.push(FetchTopic::default().with_topic(crate::api::topic_name(topic)));
        }
        if let Some(last) = topics.last_mut() {
            last.partitions.push(data);
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(partitions: &[(&str, i32, i64)]) -> BTreeMap<PartitionKey, FetchPartition> {
        partitions
            .iter()
            .map(|&(topic, partition, offset)| {
                (
                    (topic.to_string(), partition),
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset),
                )
            })
            .collect()
    }

    /// What a fetch lists: `(topic, partition, offset)`, and the forgotten `(topic, partition)`.
    type Lists = (Vec<(String, i32, i64)>, Vec<(String, i32)>);

    fn lists(fetch: &SessionFetch) -> Lists {
        let listed = fetch
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic.0.to_string(), p.partition, p.fetch_offset))
            })
            .collect();
        let forgotten = fetch
            .forgotten
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
            .collect();
        (listed, forgotten)
    }

    fn answer(session_id: i32, error: Option<ResponseError>) -> FetchResponse {
        FetchResponse::default()
            .with_session_id(session_id)
            .with_error_code(error.map_or(0, |e| e.code()))
    }

    fn s(topic: &str) -> String {
        topic.to_string()
    }

    #[test]
    fn full_then_only_what_changed() {
        let mut handler = FetchSessionHandler::default();
        let fetch = handler.build(wanted(&[("a", 0, 5), ("a", 1, 7), ("b", 0, 0)]));
        assert_eq!((fetch.session_id, fetch.epoch), (0, 0));
        assert_eq!(
            lists(&fetch),
            (vec![(s("a"), 0, 5), (s("a"), 1, 7), (s("b"), 0, 0)], vec![])
        );
        handler.handle_response(&answer(42, None));

        // a-1 moved, b-0 left, c-0 came: only those.
        let fetch = handler.build(wanted(&[("a", 0, 5), ("a", 1, 9), ("c", 0, 3)]));
        assert_eq!((fetch.session_id, fetch.epoch), (42, 1));
        assert_eq!(
            lists(&fetch),
            (vec![(s("a"), 1, 9), (s("c"), 0, 3)], vec![(s("b"), 0)])
        );
        handler.handle_response(&answer(42, None));

        // At rest: an empty fetch, epoch 2.
        let fetch = handler.build(wanted(&[("a", 0, 5), ("a", 1, 9), ("c", 0, 3)]));
        assert_eq!((fetch.session_id, fetch.epoch), (42, 2));
        assert_eq!(lists(&fetch), (vec![], vec![]));
    }

    #[test]
    fn errors_start_over_with_a_full_fetch() {
        let all = || wanted(&[("a", 0, 5), ("b", 0, 0)]);
        let mut handler = FetchSessionHandler::default();
        handler.build(all());
        handler.handle_response(&answer(42, None));
        handler.build(all());

        // A wrong epoch: a full fetch that closes session 42 (and opens another).
        handler.handle_response(&answer(0, Some(ResponseError::InvalidFetchSessionEpoch)));
        let fetch = handler.build(all());
        assert_eq!((fetch.session_id, fetch.epoch), (42, 0));
        assert_eq!(lists(&fetch).0.len(), 2);

        // The session is unknown: a full fetch asking for a new one.
        handler.handle_response(&answer(7, None));
        handler.build(all());
        handler.handle_response(&answer(0, Some(ResponseError::FetchSessionIdNotFound)));
        let fetch = handler.build(all());
        assert_eq!((fetch.session_id, fetch.epoch), (0, 0));
        assert_eq!(lists(&fetch).0.len(), 2);

        // No room on the leader: full fetches until there is.
        handler.handle_response(&answer(0, None));
        let fetch = handler.build(all());
        assert_eq!(
            (fetch.session_id, fetch.epoch, lists(&fetch).0.len()),
            (0, 0, 2)
        );

        // A lost answer: the next fetch is full, naming the session to replace.
        handler.handle_response(&answer(9, None));
        handler.build(all());
        handler.handle_error();
        let fetch = handler.build(all());
        assert_eq!(
            (fetch.session_id, fetch.epoch, lists(&fetch).0.len()),
            (9, 0, 2)
        );
    }
}
