//! The Prometheus endpoint reflects what the broker did, with exact values.

mod common;

use std::time::Duration;

use common::wire::{self, RawConn};
use common::{http_get, poll_until, TestServer};

/// The value of the sample whose name-and-labels part is exactly `series`
/// (labels as the exposition prints them, e.g. `skald_requests_total{api="Produce"}`).
/// Labels are compared as a set, so their order in the exposition does not matter.
fn sample(body: &str, series: &str) -> Option<f64> {
    let wanted = parse_series(series);
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .find_map(|line| {
            let (name_labels, value) = line.rsplit_once(' ')?;
            (parse_series(name_labels) == wanted).then(|| value.parse().ok())?
        })
}

fn parse_series(series: &str) -> (String, Vec<String>) {
    match series.split_once('{') {
        None => (series.trim().to_string(), Vec::new()),
        Some((name, rest)) => {
            let labels = rest.trim_end().trim_end_matches('}');
            let mut labels: Vec<String> = labels
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            labels.sort();
            (name.to_string(), labels)
        }
    }
}

fn scrape(server: &TestServer) -> String {
    let (status, body) = http_get(server.metrics_addr(), "/metrics")
        .unwrap_or_else(|e| panic!("GET {}: {e}", server.metrics_url()));
    assert_eq!(status, 200, "GET {}: body {body}", server.metrics_url());
    body
}

#[test]
fn produce_updates_request_bytes_records_and_offset_metrics() {
    let server = TestServer::start();
    let topic = "metered";
    wire::ensure_topic(server.kafka_addr(), topic);

    let mut conn = RawConn::connect(server.kafka_addr());
    let batch_a = wire::batch_v2(&[("a", "1", 1_000), ("b", "2", 1_001), ("c", "3", 1_002)]);
    let batch_b = wire::batch_v2(&[("d", "4", 1_003), ("e", "5", 1_004)]);
    let bytes_in = (batch_a.len() + batch_b.len()) as f64;
    assert_eq!(conn.produce_raw(topic, 0, batch_a.clone()), (0, 0));
    assert_eq!(conn.produce_raw(topic, 0, batch_b.clone()), (0, 3));

    // One Fetch returns both batches as they were sent, with only the base offset (and the
    // partition leader epoch, outside the CRC) assigned by the broker.
    let (error_code, high_watermark, fetched) = conn.fetch_raw(topic, 0, 0);
    assert_eq!((error_code, high_watermark), (0, 5));
    assert_eq!(
        fetched.len(),
        batch_a.len() + batch_b.len(),
        "fetched bytes"
    );
    let (fetched_a, fetched_b) = fetched.split_at(batch_a.len());
    for (fetched, sent, base_offset) in [(fetched_a, &batch_a, 0i64), (fetched_b, &batch_b, 3)] {
        assert_eq!(fetched[..8], base_offset.to_be_bytes(), "base offset");
        assert_eq!(fetched[8..12], sent[8..12], "batch length");
        assert_eq!(
            fetched[16..],
            sent[16..],
            "magic, CRC, attributes and records as sent"
        );
    }

    // Metrics may be updated just after the response is sent: poll, with a deadline.
    let body = poll_until("produce and fetch metrics", Duration::from_secs(10), || {
        let body = scrape(&server);
        let produces = sample(&body, r#"skald_requests_total{api="Produce"}"#);
        let fetches = sample(&body, r#"skald_requests_total{api="Fetch"}"#);
        (produces == Some(2.0) && fetches == Some(1.0)).then_some(body)
    });
    assert_eq!(
        sample(
            &body,
            &format!(r#"skald_bytes_out_total{{topic="{topic}"}}"#)
        ),
        Some(bytes_in),
        "bytes out = the two batches, fetched once\n{body}"
    );
    assert_eq!(
        sample(
            &body,
            &format!(r#"skald_log_end_offset{{topic="{topic}",partition="0"}}"#)
        ),
        Some(5.0),
        "log end offset gauge\n{body}"
    );
    assert_eq!(
        sample(
            &body,
            &format!(r#"skald_records_in_total{{topic="{topic}"}}"#)
        ),
        Some(5.0),
        "records in\n{body}"
    );
    assert_eq!(
        sample(
            &body,
            &format!(r#"skald_bytes_in_total{{topic="{topic}"}}"#)
        ),
        Some(bytes_in),
        "bytes in = the two batches as sent\n{body}"
    );
    assert_eq!(
        sample(
            &body,
            &format!(r#"skald_log_size_bytes{{topic="{topic}",partition="0"}}"#)
        ),
        Some(bytes_in),
        "log size = the two batches as stored\n{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"skald_request_latency_seconds_count{api="Produce"}"#
        ),
        Some(2.0),
        "latency histogram counts every Produce\n{body}"
    );
    assert!(
        body.contains(r#"# TYPE skald_request_latency_seconds histogram"#),
        "latency metric is a histogram\n{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"skald_request_latency_seconds_bucket{api="Produce",le="+Inf"}"#
        ),
        Some(2.0),
        "+Inf bucket\n{body}"
    );
}

#[test]
fn errors_by_code_request_times_partition_counts_cluster_and_process_metrics() {
    let server = TestServer::start_with(&[("num.partitions", "3")]);
    let topic = "counted";
    wire::ensure_topic(server.kafka_addr(), topic);
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        conn.produce_raw(topic, 0, wire::batch_v2(&[("k", "v", 1_000)])),
        (0, 0)
    );
    // Partition 7 does not exist: UNKNOWN_TOPIC_OR_PARTITION (3).
    assert_eq!(
        conn.produce_raw(topic, 7, wire::batch_v2(&[("k", "v", 1_000)]))
            .0,
        3
    );

    let body = poll_until("both produces counted", Duration::from_secs(10), || {
        let body = scrape(&server);
        (sample(&body, r#"skald_requests_total{api="Produce"}"#) == Some(2.0)).then_some(body)
    });
    let value = |series: &str| sample(&body, series);
    // Every error code of every response, NONE included; nothing else for Produce.
    assert_eq!(
        value(r#"skald_request_errors_total{api="Produce",error="NONE"}"#),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(r#"skald_request_errors_total{api="Produce",error="UNKNOWN_TOPIC_OR_PARTITION"}"#),
        Some(1.0),
        "{body}"
    );
    let produce_error_series = body
        .lines()
        .filter(|l| l.starts_with("skald_request_errors_total{") && l.contains(r#"api="Produce""#))
        .count();
    assert_eq!(produce_error_series, 2, "{body}");
    // Both produces passed through the queue and processing histograms.
    for histogram in [
        "skald_request_queue_time_seconds",
        "skald_request_processing_time_seconds",
    ] {
        assert_eq!(
            value(&format!(r#"{histogram}_count{{api="Produce"}}"#)),
            Some(2.0),
            "{body}"
        );
        assert!(
            body.contains(&format!("# TYPE {histogram} histogram")),
            "{body}"
        );
    }
    // The lone broker hosts and leads the topic's three partitions.
    assert_eq!(value("skald_partitions"), Some(3.0), "{body}");
    assert_eq!(value("skald_leader_partitions"), Some(3.0), "{body}");
    // It is the active controller, so it reports the cluster as the metadata says.
    assert_eq!(value("skald_controller_active"), Some(1.0), "{body}");
    assert_eq!(value("skald_cluster_topics"), Some(1.0), "{body}");
    assert_eq!(value("skald_cluster_partitions"), Some(3.0), "{body}");
    assert_eq!(value("skald_leaderless_partitions"), Some(0.0), "{body}");
    assert_eq!(
        value("skald_cluster_under_min_isr_partitions"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        value(r#"skald_brokers{state="unfenced"}"#),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(r#"skald_brokers{state="fenced"}"#),
        Some(0.0),
        "{body}"
    );
    // Process metrics: the open-file limit is the process's own.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let max_open_files: f64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .expect("Max open files");
    assert_eq!(value("process_max_fds"), Some(max_open_files), "{body}");
    for positive in [
        "process_open_fds",
        "process_resident_memory_bytes",
        "process_threads",
        "process_start_time_seconds",
    ] {
        assert!(
            value(positive).is_some_and(|v| v > 0.0),
            "{positive}\n{body}"
        );
    }
    assert!(value("process_cpu_seconds_total").is_some(), "{body}");
}

#[test]
fn unknown_path_is_404() {
    let server = TestServer::start();
    let (status, _) = http_get(server.metrics_addr(), "/nope").expect("GET /nope");
    assert_eq!(status, 404);
}

#[test]
fn sample_parser_matches_labels_in_any_order() {
    let body = "# HELP x y\nskald_log_end_offset{partition=\"0\",topic=\"t\"} 5\nskald_x 1\n";
    assert_eq!(
        sample(body, r#"skald_log_end_offset{topic="t",partition="0"}"#),
        Some(5.0)
    );
    assert_eq!(sample(body, "skald_x"), Some(1.0));
    assert_eq!(
        sample(body, r#"skald_log_end_offset{topic="u",partition="0"}"#),
        None
    );
}

#[test]
fn consumer_group_lag_members_and_rebalances_are_exported() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        FindCoordinatorRequest, GroupId, JoinGroupRequest, OffsetCommitRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    let server = TestServer::start_with(&[("group.initial.rebalance.delay.ms", "0")]);
    wire::ensure_topic(server.kafka_addr(), "lagged");
    let mut conn = RawConn::connect(server.kafka_addr());
    for i in 0..10 {
        let batch = wire::batch_v2(&[("k", "v", 1_000 + i)]);
        assert_eq!(conn.produce_raw("lagged", 0, batch), (0, i));
    }
    let text = |s: &str| StrBytes::from_string(s.to_string());
    let found = conn.request(
        &FindCoordinatorRequest::default().with_key(text("lag-group")),
        2,
    );
    assert_eq!(found.error_code, 0);

    // A simple (assign-style) commit of offset 3: lag 10 - 3 = 7.
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(text("lag-group")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text("lagged")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(3)])]);
    let committed = conn.request(&commit, 8);
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);

    // One member joins another group: one rebalance, one member.
    let join = |member_id: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(text("joined-group")))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(text(member_id))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default().with_name(text("range"))
            ])
    };
    let first = conn.request(&join(""), 5);
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    let joined = conn.request(&join(first.member_id.as_str()), 5);
    assert_eq!(joined.error_code, 0);

    let body = scrape(&server);
    let lag = r#"skald_consumer_group_lag{group="lag-group",partition="0",topic="lagged"}"#;
    assert_eq!(sample(&body, lag), Some(7.0), "{body}");
    assert_eq!(
        sample(&body, r#"skald_consumer_group_members{group="lag-group"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &body,
            r#"skald_consumer_group_members{group="joined-group"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            r#"skald_consumer_group_rebalances_total{group="joined-group"}"#
        ),
        Some(1.0)
    );

    // More records raise the lag at the next scrape.
    assert_eq!(
        conn.produce_raw("lagged", 0, wire::batch_v2(&[("k", "v", 2_000)])),
        (0, 10)
    );
    assert_eq!(sample(&scrape(&server), lag), Some(8.0));
}
