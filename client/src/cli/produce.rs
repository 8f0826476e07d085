//! `skald produce TOPIC`: one record per line of stdin.

use std::collections::BTreeMap;

use bytes::Bytes;
use std::io::BufRead;

use crate::error::{Error, Result};
use crate::producer::{Acks, Producer, ProducerConfig};
use crate::records::ProducerRecord;

use super::BrokerArgs;

/// Lines read ahead of the producer.
const STDIN_LINES_QUEUED_MAX: usize = 4096;

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line at the first SEP into key and value (lines without SEP get no key).
    #[arg(short = 'K', long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Acknowledgement required: all, 1 or 0.
    #[arg(short, long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// Send every record to this partition (default: by key, or round robin without keys).
    #[arg(short, long)]
    pub partition: Option<i32>,
    #[command(flatten)]
    pub brokers: BrokerArgs,
}

pub(super) fn parse_acks(s: &str) -> std::result::Result<Acks, String> {
    s.parse().map_err(|err: Error| err.to_string())
}

pub async fn run(args: ProduceArgs) -> Result<()> {
    if args.key_separator.as_deref() == Some("") {
        return Err(Error::InvalidArgument(
            "--key-separator must not be empty".to_owned(),
        ));
    }
    let client = args.brokers.connect().await?;
    let config = ProducerConfig {
        acks: args.acks,
        ..ProducerConfig::default()
    };
    let linger = config.linger;
    let mut producer = Producer::new(client, config);
    // Fail before reading stdin if the topic is not there.
    producer.partition_count(&args.topic).await?;

    let mut lines = stdin_lines();
    let mut summary = Summary::default();
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                let line = line.map_err(|source| Error::Io { addr: "stdin".to_owned(), source })?;
                let record = to_record(line, args.key_separator.as_deref());
                producer.send(&args.topic, args.partition, record).await?;
            }
            // Nothing arrived for a while: send what lingered (an interactive producer).
            () = tokio::time::sleep(linger * 2) => producer.poll().await?,
        }
        summary.absorb(producer.take_deliveries())?;
    }
    summary.absorb(producer.flush().await?)?;
    eprintln!("{}", summary.describe(&args.topic, args.acks));
    Ok(())
}

/// Lines of stdin, read on a thread of their own (blocking reads), through a bounded channel.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(STDIN_LINES_QUEUED_MAX);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let failed = line.is_err();
            if sender.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    receiver
}

fn to_record(line: String, separator: Option<&str>) -> ProducerRecord {
    match separator.and_then(|sep| line.split_once(sep)) {
        Some((key, value)) => ProducerRecord::keyed(key.to_owned(), value.to_owned()),
        None => ProducerRecord::value(Bytes::from(line)),
    }
}

#[derive(Default)]
struct Summary {
    records: usize,
    /// Last offset written, by partition.
    last_offsets: BTreeMap<i32, i64>,
}

impl Summary {
    fn absorb(&mut self, deliveries: Vec<crate::producer::Delivery>) -> Result<()> {
        for delivery in deliveries {
            let base_offset = delivery.result?;
            self.records += delivery.record_count;
            let last = base_offset + delivery.record_count as i64 - 1;
            let entry = self.last_offsets.entry(delivery.partition).or_insert(last);
            *entry = (*entry).max(last);
        }
        Ok(())
    }

    fn describe(&self, topic: &str, acks: Acks) -> String {
        let mut text = format!("produced {} records to {topic}", self.records);
        if acks != Acks::None && !self.last_offsets.is_empty() {
            let offsets: Vec<String> = self
                .last_offsets
                .iter()
                .map(|(p, o)| format!("{p}@{o}"))
                .collect();
            text.push_str(&format!(
                " (last offsets, partition@offset: {})",
                offsets.join(" ")
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        let record = to_record("k:v:w".to_owned(), Some(":"));
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"v:w"[..]));
        let record = to_record("plain".to_owned(), Some(":"));
        assert_eq!(record.key, None);
        assert_eq!(record.value.as_deref(), Some(&b"plain"[..]));
        let record = to_record("a:b".to_owned(), None);
        assert_eq!(record.value.as_deref(), Some(&b"a:b"[..]));
    }
}
