//! The follower's side of a fetch session (Kafka's `FetchSessionHandler`): one per leader. Each
//! round the fetcher hands over every partition it wants fetched with its current fetch position;
//! the handler sends all of them in a full fetch when there is no session, and otherwise only
//! those added or whose position changed, forgetting those that left. Any session error or lost
//! answer starts over with a full fetch, as Kafka's client does.

use std::collections::HashMap;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::ResponseError;

use crate::fetch_session::{next_epoch, INITIAL_EPOCH, INVALID_SESSION_ID};

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
    /// What the leader's session holds, by topic and partition, as last sent, with the round
    /// that last wanted it. Looked up by `&str` (no key built per partition per fetch: a
    /// follower at rest goes over thousands of partitions twice a second to find nothing).
    session_partitions: HashMap<String, HashMap<i32, (FetchPartition, u64)>>,
    round: u64,
}

impl FetchSessionHandler {
    /// Kafka's `Builder.build`: the next fetch, given every partition wanted now (topic name and
    /// fetch data; each partition once).
    pub fn build(&mut self, wanted: Vec<(&str, FetchPartition)>) -> SessionFetch {
        self.round += 1;
        let round = self.round;
        if self.epoch == INITIAL_EPOCH {
            self.session_partitions.clear();
            for (topic, data) in &wanted {
                self.remember(topic, data.clone(), round);
            }
            return SessionFetch {
                session_id: self.session_id,
                epoch: self.epoch,
                topics: by_topic(wanted),
                forgotten: Vec::new(),
            };
        }
        let mut changed = Vec::new();
        for (topic, data) in wanted {
            let sent = self
                .session_partitions
                .get_mut(topic)
                .and_then(|partitions| partitions.get_mut(&data.partition));
            match sent {
                Some((sent, seen)) => {
                    *seen = round;
                    if *sent != data {
                        *sent = data.clone();
                        changed.push((topic, data));
                    }
                }
                None => {
                    self.remember(topic, data.clone(), round);
                    changed.push((topic, data));
                }
            }
        }
        // Whatever this round did not want leaves the session.
        let mut forgotten = Vec::new();
        self.session_partitions.retain(|topic, partitions| {
            let mut gone: Vec<i32> = Vec::new();
            partitions.retain(|&partition, (_, seen)| {
                let wanted = *seen == round;
                if !wanted {
                    gone.push(partition);
                }
                wanted
            });
            if !gone.is_empty() {
                gone.sort_unstable();
                forgotten.push(
                    ForgottenTopic::default()
                        .with_topic(crate::api::topic_name(topic))
                        .with_partitions(gone),
                );
            }
            !partitions.is_empty()
        });
        forgotten.sort_by(|a, b| a.topic.cmp(&b.topic));
        SessionFetch {
            session_id: self.session_id,
            epoch: self.epoch,
            topics: by_topic(changed),
            forgotten,
        }
    }

    fn remember(&mut self, topic: &str, data: FetchPartition, round: u64) {
        let partitions = match self.session_partitions.get_mut(topic) {
            Some(partitions) => partitions,
            None => self
                .session_partitions
                .entry(topic.to_string())
                .or_default(),
        };
        partitions.insert(data.partition, (data, round));
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

/// Groups partitions by topic, in topic then partition order.
fn by_topic(mut partitions: Vec<(&str, FetchPartition)>) -> Vec<FetchTopic> {
    partitions.sort_by(|a, b| (a.0, a.1.partition).cmp(&(b.0, b.1.partition)));
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (topic, data) in partitions {
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

    fn wanted<'a>(partitions: &[(&'a str, i32, i64)]) -> Vec<(&'a str, FetchPartition)> {
        // Out of order on purpose: fetches list them sorted.
        partitions
            .iter()
            .rev()
            .map(|&(topic, partition, offset)| {
                (
                    topic,
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
