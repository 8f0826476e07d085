//! `skald consume TOPIC`: print values (or key, separator, value), one record per line.

use std::io::Write;

use crate::consumer::{Consumer, ConsumerConfig, StartOffset};
use crate::error::{Error, Result};
use crate::records::ConsumerRecord;

use super::BrokerArgs;

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the beginning of each partition (default: only new records).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset in each partition read.
    #[arg(short, long)]
    pub offset: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Stop after this many records (default: run until Ctrl-C).
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Print the key too, before the separator.
    #[arg(long)]
    pub print_key: bool,
    /// What goes between key and value with --print-key.
    #[arg(long, value_name = "SEP", default_value = "\t")]
    pub key_separator: String,
    #[command(flatten)]
    pub brokers: BrokerArgs,
}

pub async fn run(args: ConsumeArgs) -> Result<()> {
    let start = match (args.from_beginning, args.offset) {
        (_, Some(offset)) => StartOffset::Offset(offset),
        (true, None) => StartOffset::Earliest,
        (false, None) => StartOffset::Latest,
    };
    let client = args.brokers.connect().await?;
    let partitions = args.partition.map(|p| vec![p]);
    let mut consumer = Consumer::assign(
        client,
        ConsumerConfig::default(),
        &args.topic,
        partitions,
        start,
    )
    .await?;
    if args.count == Some(0) {
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    'consume: loop {
        let records = tokio::select! {
            records = consumer.poll() => records?,
            _ = &mut interrupted => break 'consume,
        };
        for record in &records {
            match write_record(&mut out, record, args.print_key, &args.key_separator) {
                Ok(()) => {}
                // `skald consume t | head`: the reader left, which is not an error.
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => break 'consume,
                Err(source) => {
                    return Err(Error::Io {
                        addr: "stdout".to_owned(),
                        source,
                    })
                }
            }
            printed += 1;
            if args.count == Some(printed) {
                break 'consume;
            }
        }
        match out.flush() {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => break 'consume,
            Err(source) => {
                return Err(Error::Io {
                    addr: "stdout".to_owned(),
                    source,
                })
            }
        }
    }
    let _ = out.flush();
    eprintln!("consumed {printed} records");
    Ok(())
}

fn write_record(
    out: &mut impl Write,
    record: &ConsumerRecord,
    print_key: bool,
    separator: &str,
) -> std::io::Result<()> {
    if print_key {
        out.write_all(record.key.as_deref().unwrap_or(b"null"))?;
        out.write_all(separator.as_bytes())?;
    }
    out.write_all(record.value.as_deref().unwrap_or(b"null"))?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn records_print_as_kafka_console_consumer_does() {
        let record = ConsumerRecord {
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: Some(Bytes::from_static(b"k")),
            value: None,
            headers: vec![],
        };
        let mut out = Vec::new();
        write_record(&mut out, &record, true, "\t").unwrap();
        write_record(&mut out, &record, false, "\t").unwrap();
        assert_eq!(out, b"k\tnull\nnull\n");
    }
}
