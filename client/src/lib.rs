//! skald-client: a Rust Kafka client (admin, producer, consumer) and the `skald` command-line tool.

pub mod cli;
