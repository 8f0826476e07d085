//! The `skald` tool's subcommands other than `server`: topics, groups, the cluster, produce,
//! consume, bench, producers, transactions.
//!
//! `src/main.rs` flattens [`Command`] into the top-level CLI and calls [`main`].

/// `print!` / `println!` for the tool's output. A closed stdout (`skald consume t | head`) ends
/// the program quietly, as a SIGPIPE would end a C tool, where `println!` would panic.
macro_rules! out {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`out!`] without the newline.
macro_rules! out_raw {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

mod bench;
mod cluster;
mod consume;
mod group;
mod produce;
mod producers;
mod topic;
mod transactions;

use std::process::ExitCode;

use crate::client::{Client, ClientConfig, DEFAULT_BROKERS};
use crate::error::Result;

/// The environment variable read when `--brokers` is not given.
pub const BROKERS_ENV: &str = "SKALD_BROKERS";

/// Subcommands of the `skald` tool other than `server`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create, list, describe and delete topics.
    Topic(topic::TopicArgs),
    /// List, describe and delete consumer groups; reset their committed offsets.
    Group(group::GroupArgs),
    /// Show the controller quorum, the brokers and how partitions spread over them.
    Cluster(cluster::ClusterArgs),
    /// Produce one record per line of stdin.
    Produce(produce::ProduceArgs),
    /// Print records of a topic, one per line.
    Consume(consume::ConsumeArgs),
    /// Measure produce or consume throughput through this client.
    Bench(bench::BenchArgs),
    /// Show the idempotent and transactional producers partition leaders remember.
    Producers(producers::ProducersArgs),
    /// List transactional ids and describe their state at their coordinators.
    Transactions(transactions::TransactionsArgs),
}

/// How to reach the cluster; accepted anywhere after the subcommand's name.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Bootstrap brokers, comma separated [env: SKALD_BROKERS] [default: 127.0.0.1:9092]
    #[arg(
        short = 'b',
        long = "brokers",
        value_name = "HOST:PORT,...",
        global = true
    )]
    pub brokers: Option<String>,
}

impl BrokerArgs {
    /// `--brokers`, else `$SKALD_BROKERS`, else the default.
    pub fn resolve(&self) -> String {
        self.brokers
            .clone()
            .or_else(|| {
                std::env::var(BROKERS_ENV)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
            })
            .unwrap_or_else(|| DEFAULT_BROKERS.to_owned())
    }

    pub async fn connect(&self) -> Result<Client> {
        Client::connect(ClientConfig::new(&self.resolve())?).await
    }
}

/// Runs one tool command, printing errors as `skald: ...` and exiting 1 on failure.
pub fn main(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("skald: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Topic(args) => topic::run(args).await,
            Command::Group(args) => group::run(args).await,
            Command::Cluster(args) => cluster::run(args).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Producers(args) => producers::run(args).await,
            Command::Transactions(args) => transactions::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("skald: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lays rows out in columns separated by two spaces.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Writes to stdout for [`out!`]: a broken pipe exits with success, any other write error with
/// a message and failure.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(err) = std::io::stdout().lock().write_fmt(args) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("skald: cannot write to stdout: {err}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{FromArgMatches, Subcommand};

    fn parse(args: &[&str]) -> std::result::Result<Command, clap::Error> {
        let cli = clap::Command::new("skald").subcommand_required(true);
        let cli = Command::augment_subcommands(cli);
        let matches =
            cli.try_get_matches_from(std::iter::once("skald").chain(args.iter().copied()))?;
        Command::from_arg_matches(&matches)
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["NAME".to_owned(), "PARTITIONS".to_owned()],
            vec!["orders".to_owned(), "6".to_owned()],
        ];
        assert_eq!(table(&rows), "NAME    PARTITIONS\norders  6\n");
    }

    #[test]
    fn brokers_option_is_accepted_before_and_after_nested_subcommands() {
        for args in [
            &["topic", "-b", "h:1", "list"][..],
            &["topic", "list", "--brokers", "h:1"][..],
        ] {
            match parse(args).unwrap() {
                Command::Topic(t) => assert_eq!(t.brokers.brokers.as_deref(), Some("h:1")),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn reset_offsets_needs_exactly_one_target_and_takes_negative_shifts() {
        let err = parse(&["group", "reset-offsets", "g", "--topic", "t"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-latest",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = parse(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--dry-run",
            "--execute",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        match parse(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t:1",
            "--shift-by",
            "-2",
        ])
        .unwrap()
        {
            Command::Group(g) => assert_eq!(
                format!("{:?}", g.command),
                format!(
                    "{:?}",
                    group::GroupCommand::ResetOffsets(group::ResetArgs {
                        group: "g".to_owned(),
                        topics: vec![("t".to_owned(), Some(vec![1]))],
                        target: group::ResetTarget {
                            to_earliest: false,
                            to_latest: false,
                            to_offset: None,
                            to_datetime: None,
                            shift_by: Some(-2),
                        },
                        dry_run: false,
                        execute: false,
                    })
                )
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn consume_offset_options_conflict() {
        let err = parse(&["consume", "t", "--from-beginning", "--offset", "3"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
