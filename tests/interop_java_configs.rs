//! Online config changes with Apache Kafka's Java Admin client (kafka-clients 4.x, pinned in
//! tests/clients/java/pom.xml): tests/clients/java/src/JavaConfigsCheck.java alters a topic's
//! configs with incrementalAlterConfigs (SET, DELETE, APPEND, a validateOnly SUBTRACT, a refused
//! value) and a cluster-wide broker default, and describes the result with synonyms; the JSON
//! summary it prints is compared here exactly.

mod common;

use std::time::Duration;

use common::clients::{assert_summary, java, java_classpath, run_json};
use common::TestServer;
use serde_json::json;

#[test]
fn java_admin_alters_configs_incrementally() {
    let server = TestServer::start();
    let mut command = java();
    command
        .arg("-cp")
        .arg(java_classpath("client"))
        .arg("JavaConfigsCheck")
        .arg(server.bootstrap());
    let summary = run_json("JavaConfigsCheck", command, Duration::from_secs(120));
    let own = |value: &str, synonyms: &[&str]| json!([value, "DYNAMIC_TOPIC_CONFIG", synonyms]);
    let after_alter = json!({
        "cleanup.policy": own(
            "delete,compact",
            &[
                "DYNAMIC_TOPIC_CONFIG:cleanup.policy=delete,compact",
                "DEFAULT_CONFIG:log.cleanup.policy=delete",
            ]
        ),
        "max.message.bytes": own(
            "2048",
            &[
                "DYNAMIC_TOPIC_CONFIG:max.message.bytes=2048",
                "DEFAULT_CONFIG:message.max.bytes=1048588",
            ]
        ),
    });
    let expected = json!({
        "alter": "ok",
        "after_alter": after_alter,
        "validate_only": "ok",
        "bad_value": "InvalidConfigurationException: Invalid value 13 for configuration \
                      segment.bytes: Value must be at least 14",
        "after_refusals": after_alter,
        "broker_default": "ok",
        "topic_retention": [
            "3600000",
            "DYNAMIC_DEFAULT_BROKER_CONFIG",
            [
                "DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.ms=3600000",
                "DEFAULT_CONFIG:log.retention.ms=604800000",
            ],
        ],
    });
    assert_summary("JavaConfigsCheck", &summary, &expected);
}
