//! `skald group list|describe|delete|reset-offsets`, after Kafka's `kafka-consumer-groups.sh`.

use std::collections::{BTreeMap, BTreeSet};

use crate::client::Client;
use crate::consumer::{list_offsets, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use crate::error::{Error, Result};
use crate::groups::{GroupDescription, GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP};

use super::{table, BrokerArgs};

#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub brokers: BrokerArgs,
    #[command(subcommand)]
    pub command: GroupCommand,
}

/// `skald group ...`
#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups: id, state and protocol type.
    List,
    /// Show a group's state, members and their assignments, and per partition the committed
    /// offset, the log end offset and the lag.
    Describe { group: String },
    /// Delete a group without members, with its committed offsets.
    Delete { group: String },
    /// Plan (--dry-run, the default) or commit (--execute) new offsets for a group without members.
    ResetOffsets(ResetArgs),
}

#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    pub group: String,
    /// A topic, or `TOPIC:P,P,...` for some of its partitions. Repeatable.
    #[arg(long = "topic", value_name = "TOPIC[:P,P,...]", required = true, value_parser = parse_topic_partitions)]
    pub topics: Vec<(String, Option<Vec<i32>>)>,
    #[command(flatten)]
    pub target: ResetTarget,
    /// Only show the new offsets (the default).
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    pub execute: bool,
}

/// Where to move the committed offsets; exactly one is required.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// The log start offset.
    #[arg(long)]
    pub to_earliest: bool,
    /// The log end offset.
    #[arg(long)]
    pub to_latest: bool,
    /// This offset (moved into [log start, log end] if outside it).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// The first offset whose record timestamp is at or after this time (the log end if none
    /// is). Format `YYYY-MM-DDTHH:MM:SS[.sss][Z|±HH:MM]`; no zone means UTC.
    #[arg(long, value_name = "DATETIME", value_parser = parse_datetime_ms)]
    pub to_datetime: Option<i64>,
    /// The committed offset plus N (N may be negative), kept within [log start, log end].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
}

pub async fn run(args: GroupArgs) -> Result<()> {
    let mut client = args.brokers.connect().await?;
    match args.command {
        GroupCommand::List => {
            let mut rows = vec![["GROUP", "STATE", "PROTOCOL-TYPE"].map(str::to_owned).to_vec()];
            for g in client.list_groups().await? {
                rows.push(vec![g.group_id, or_dash(g.state), or_dash(g.protocol_type)]);
            }
            out_raw!("{}", table(&rows));
            Ok(())
        }
        GroupCommand::Describe { group } => describe(&mut client, &group).await,
        GroupCommand::Delete { group } => match client.delete_group(&group).await {
            Ok(()) => {
                out!("deleted group {group}");
                Ok(())
            }
            Err(err) => Err(match err.kafka_code() {
                Some(NON_EMPTY_GROUP) => Error::InvalidArgument(format!(
                    "group {group} is not empty: it has active members; stop them before deleting it (NON_EMPTY_GROUP)"
                )),
                Some(GROUP_ID_NOT_FOUND) => no_such_group(&group),
                _ => err,
            }),
        },
        GroupCommand::ResetOffsets(args) => reset_offsets(&mut client, args).await,
    }
}

fn no_such_group(group: &str) -> Error {
    Error::InvalidArgument(format!("group {group} does not exist"))
}

fn or_dash(value: String) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value
    }
}

fn offset_cell(offset: Option<i64>) -> String {
    offset.map_or_else(|| "-".to_owned(), |o| o.to_string())
}

async fn describe(client: &mut Client, group: &str) -> Result<()> {
    let description = client.describe_group(group).await?;
    let committed = client.committed_offsets(group).await?;
    if !description.exists() && committed.is_empty() {
        return Err(no_such_group(group));
    }
    out_raw!("{}", summary(&description));

    if !description.members.is_empty() {
        out!();
        let mut rows = vec![["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"]
            .map(str::to_owned)
            .to_vec()];
        for m in &description.members {
            let assignment: Vec<String> = m
                .assignment
                .iter()
                .map(|(topic, partitions)| {
                    let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
                    format!("{topic}:{}", list.join(","))
                })
                .collect();
            rows.push(vec![
                m.member_id.clone(),
                or_dash(m.client_id.clone()),
                or_dash(m.client_host.clone()),
                or_dash(assignment.join(" ")),
            ]);
        }
        out_raw!("{}", table(&rows));
    }

    // Every partition with a committed offset or an owner.
    let mut owners: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &description.members {
        for (topic, partitions) in &m.assignment {
            for p in partitions {
                owners.insert((topic.clone(), *p), m.member_id.clone());
            }
        }
    }
    let partitions: BTreeSet<(String, i32)> =
        committed.keys().chain(owners.keys()).cloned().collect();
    if partitions.is_empty() {
        return Ok(());
    }
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, p) in &partitions {
        by_topic.entry(topic.clone()).or_default().push(*p);
    }
    let mut log_ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (topic, ps) in &by_topic {
        match list_offsets(client, topic, ps, LATEST_TIMESTAMP).await {
            Ok(ends) => {
                log_ends.extend(ends.into_iter().map(|(p, end)| ((topic.clone(), p), end)));
            }
            // A deleted topic, or a partition it no longer has: no log end to show.
            Err(Error::UnknownTopic { .. } | Error::UnknownPartition { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    out!();
    let mut rows = vec![[
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "MEMBER-ID",
    ]
    .map(str::to_owned)
    .to_vec()];
    for key in &partitions {
        let current = committed.get(key).copied();
        let end = log_ends.get(key).copied();
        let lag = match (current, end) {
            (Some(current), Some(end)) => Some((end - current).max(0)),
            _ => None,
        };
        rows.push(vec![
            key.0.clone(),
            key.1.to_string(),
            offset_cell(current),
            offset_cell(end),
            offset_cell(lag),
            owners.get(key).cloned().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    out_raw!("{}", table(&rows));
    Ok(())
}

fn summary(description: &GroupDescription) -> String {
    table(&[
        vec!["GROUP".to_owned(), description.group_id.clone()],
        vec!["STATE".to_owned(), description.state.clone()],
        vec![
            "PROTOCOL-TYPE".to_owned(),
            or_dash(description.protocol_type.clone()),
        ],
        vec!["PROTOCOL".to_owned(), or_dash(description.protocol.clone())],
        vec!["MEMBERS".to_owned(), description.members.len().to_string()],
    ])
}

/// What a reset moves the committed offsets to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Datetime(i64),
    ShiftBy(i64),
}

impl ResetTarget {
    fn target(&self) -> Result<Target> {
        Ok(match self {
            ResetTarget {
                to_earliest: true, ..
            } => Target::Earliest,
            ResetTarget { to_latest: true, .. } => Target::Latest,
            ResetTarget {
                to_offset: Some(n), ..
            } => Target::Offset(*n),
            ResetTarget {
                to_datetime: Some(ms),
                ..
            } => Target::Datetime(*ms),
            ResetTarget {
                shift_by: Some(n), ..
            } => Target::ShiftBy(*n),
            _ => {
                return Err(Error::InvalidArgument(
                    "say where to reset to: --to-earliest, --to-latest, --to-offset, --to-datetime or --shift-by".to_owned(),
                ))
            }
        })
    }
}

/// One partition's new offset, given its committed one and its log's bounds.
fn new_offset(
    target: Target,
    current: Option<i64>,
    earliest: i64,
    latest: i64,
    at_time: Option<i64>,
) -> std::result::Result<i64, &'static str> {
    let clamp = |offset: i64| offset.clamp(earliest, latest.max(earliest));
    Ok(match target {
        Target::Earliest => earliest,
        Target::Latest => latest,
        Target::Offset(n) => clamp(n),
        // ListOffsets answers -1 when no record is that recent: start at the end.
        Target::Datetime(_) => match at_time {
            Some(offset) if offset >= 0 => clamp(offset),
            _ => latest,
        },
        Target::ShiftBy(n) => {
            let current = current.ok_or("there is no committed offset to shift")?;
            clamp(current.saturating_add(n))
        }
    })
}

async fn reset_offsets(client: &mut Client, args: ResetArgs) -> Result<()> {
    let group = args.group.as_str();
    let target = args.target.target()?;
    let description = client.describe_group(group).await?;
    // Kafka's rule: offsets move only while no consumer could be committing over them.
    if description.state != "Empty" && description.state != "Dead" {
        return Err(Error::InvalidArgument(format!(
            "cannot reset the offsets of group {group}: it is {} with {} member(s); offsets can be reset only while the group is Empty or Dead",
            description.state,
            description.members.len()
        )));
    }
    let committed = client.committed_offsets(group).await?;
    // topic → partition → (current, new)
    let mut plan: BTreeMap<String, BTreeMap<i32, (Option<i64>, i64)>> = BTreeMap::new();
    for (topic, wanted) in &args.topics {
        let all: Vec<i32> = client
            .topic(topic)
            .await?
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect();
        let partitions = match wanted {
            None => all,
            Some(wanted) => {
                if let Some(missing) = wanted.iter().find(|p| !all.contains(p)) {
                    return Err(Error::UnknownPartition {
                        topic: topic.clone(),
                        partition: *missing,
                        partitions: all.len(),
                    });
                }
                wanted.clone()
            }
        };
        let earliest = list_offsets(client, topic, &partitions, EARLIEST_TIMESTAMP).await?;
        let latest = list_offsets(client, topic, &partitions, LATEST_TIMESTAMP).await?;
        let at_time = match target {
            Target::Datetime(ms) => list_offsets(client, topic, &partitions, ms).await?,
            _ => BTreeMap::new(),
        };
        let entry = plan.entry(topic.clone()).or_default();
        for p in partitions {
            let current = committed.get(&(topic.clone(), p)).copied();
            let bound = |offsets: &BTreeMap<i32, i64>| {
                offsets.get(&p).copied().ok_or_else(|| Error::Protocol {
                    addr: "broker".to_owned(),
                    detail: format!("ListOffsets gave no offset for {topic}-{p}"),
                })
            };
            let new = new_offset(
                target,
                current,
                bound(&earliest)?,
                bound(&latest)?,
                at_time.get(&p).copied(),
            )
            .map_err(|why| {
                Error::InvalidArgument(format!("cannot reset {topic}-{p} of group {group}: {why}"))
            })?;
            entry.insert(p, (current, new));
        }
    }

    let mut rows = vec![["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]
        .map(str::to_owned)
        .to_vec()];
    for (topic, partitions) in &plan {
        for (p, (current, new)) in partitions {
            rows.push(vec![
                topic.clone(),
                p.to_string(),
                offset_cell(*current),
                new.to_string(),
            ]);
        }
    }
    out_raw!("{}", table(&rows));
    if !args.execute {
        eprintln!("dry run: nothing committed; add --execute to commit these offsets");
        return Ok(());
    }
    let mut count = 0;
    for (topic, partitions) in &plan {
        let offsets: BTreeMap<i32, i64> =
            partitions.iter().map(|(p, (_, new))| (*p, *new)).collect();
        client.commit_offsets(group, topic, &offsets).await?;
        count += offsets.len();
    }
    eprintln!("committed {count} offset(s) for group {group}");
    Ok(())
}

fn parse_topic_partitions(s: &str) -> std::result::Result<(String, Option<Vec<i32>>), String> {
    let (topic, partitions) = match s.split_once(':') {
        None => (s, None),
        Some((topic, list)) => {
            let partitions = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|p| *p >= 0)
                        .ok_or_else(|| format!("{p:?} is not a partition number"))
                })
                .collect::<std::result::Result<Vec<i32>, String>>()?;
            (topic, Some(partitions))
        }
    };
    if topic.is_empty() {
        return Err(format!("expected TOPIC or TOPIC:P,P,..., got {s:?}"));
    }
    Ok((topic.to_owned(), partitions))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM|±HHMM]` (UTC without a zone) into
/// milliseconds since the Unix epoch.
pub(crate) fn parse_datetime_ms(s: &str) -> std::result::Result<i64, String> {
    let bad = || format!("expected YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM], got {s:?}");
    let (date, rest) = s.split_once(['T', 't']).ok_or_else(bad)?;
    let number = |text: &str, digits: usize| -> std::result::Result<i64, String> {
        if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        text.parse::<i64>().map_err(|_| bad())
    };
    let mut date_parts = date.split('-');
    let (Some(y), Some(mo), Some(d), None) = (
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
    ) else {
        return Err(bad());
    };
    let (year, month, day) = (number(y, 4)?, number(mo, 2)?, number(d, 2)?);
    // Split the zone off the time.
    let (time, zone_offset_s) = if let Some(time) = rest.strip_suffix(['Z', 'z']) {
        (time, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (time, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let zone = &zone[1..];
        let (h, m) = match zone.split_once(':') {
            Some((h, m)) => (h, m),
            None if zone.len() == 4 => zone.split_at(2),
            None => return Err(bad()),
        };
        let (h, m) = (number(h, 2)?, number(m, 2)?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        (time, sign * (h * 3600 + m * 60))
    } else {
        (rest, 0)
    };
    let (time, fraction) = match time.split_once('.') {
        Some((time, fraction)) => (time, Some(fraction)),
        None => (time, None),
    };
    let mut time_parts = time.split(':');
    let (Some(h), Some(mi), Some(sec), None) = (
        time_parts.next(),
        time_parts.next(),
        time_parts.next(),
        time_parts.next(),
    ) else {
        return Err(bad());
    };
    let (hour, minute, second) = (number(h, 2)?, number(mi, 2)?, number(sec, 2)?);
    let millis = match fraction {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<3}");
            padded[..3].parse::<i64>().map_err(|_| bad())?
        }
        Some(_) => return Err(bad()),
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - zone_offset_s;
    Ok(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_to_epoch_millis() {
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_datetime_ms("2026-11-21T10:00:00Z"),
            Ok(1_795_255_200_000)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-21T10:00:00.25Z"),
            Ok(1_795_255_200_250)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-21T11:30:00+01:30"),
            Ok(1_795_255_200_000)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-21T05:00:00-0500"),
            Ok(1_795_255_200_000)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-21T10:00:00"),
            Ok(1_795_255_200_000)
        );
        assert_eq!(
            parse_datetime_ms("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800_000)
        );
        for bad in [
            "2026-11-21",
            "2026-11-21 10:00:00Z",
            "2026-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T10:00Z",
            "26-11-21T10:00:00Z",
            "2026-11-21T10:00:00+5",
        ] {
            assert!(parse_datetime_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_offsets_follow_kafka_rules() {
        let (earliest, latest) = (2, 10);
        let plan = |target, current| new_offset(target, current, earliest, latest, None);
        assert_eq!(plan(Target::Earliest, Some(5)), Ok(2));
        assert_eq!(plan(Target::Latest, None), Ok(10));
        assert_eq!(plan(Target::Offset(7), None), Ok(7));
        assert_eq!(plan(Target::Offset(99), None), Ok(10));
        assert_eq!(plan(Target::Offset(0), None), Ok(2));
        assert_eq!(plan(Target::ShiftBy(-2), Some(5)), Ok(3));
        assert_eq!(plan(Target::ShiftBy(-9), Some(5)), Ok(2));
        assert_eq!(plan(Target::ShiftBy(9), Some(5)), Ok(10));
        assert!(plan(Target::ShiftBy(1), None).is_err());
        let at = |offset| new_offset(Target::Datetime(0), None, earliest, latest, Some(offset));
        assert_eq!(at(4), Ok(4));
        assert_eq!(at(-1), Ok(10));
    }

    #[test]
    fn topic_partition_specs_parse() {
        assert_eq!(parse_topic_partitions("t"), Ok(("t".to_owned(), None)));
        assert_eq!(
            parse_topic_partitions("t:0,2"),
            Ok(("t".to_owned(), Some(vec![0, 2])))
        );
        assert!(parse_topic_partitions("t:x").is_err());
        assert!(parse_topic_partitions(":1").is_err());
    }
}
