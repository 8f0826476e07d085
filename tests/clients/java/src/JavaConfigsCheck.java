import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.AlterConfigsOptions;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeConfigsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.config.ConfigResource;

/**
 * Online config changes through Apache Kafka's Java Admin client (kafka-clients 4.x) against a
 * Skald server; prints one JSON summary that tests/interop_java_configs.rs compares exactly.
 *
 * Usage: JavaConfigsCheck BOOTSTRAP
 *
 * Creates `java-configs` (retention.ms=86400000), then with incrementalAlterConfigs: SETs
 * max.message.bytes, DELETEs retention.ms and APPENDs compact to cleanup.policy; SUBTRACTs delete
 * with validateOnly (nothing changes); sets a bad value (refused); sets a cluster-wide broker
 * default. Each step's outcome and the topic's dynamic configs (with their sources and synonyms)
 * go into the summary.
 */
public final class JavaConfigsCheck {
    static final String TOPIC = "java-configs";

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        Map<String, Object> summary = new TreeMap<>();
        try (Admin admin = Admin.create(props)) {
            NewTopic topic = new NewTopic(TOPIC, 1, (short) 1)
                    .configs(Map.of("retention.ms", "86400000"));
            admin.createTopics(List.of(topic)).all().get();
            ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, TOPIC);
            ConfigResource clusterDefault = new ConfigResource(ConfigResource.Type.BROKER, "");

            summary.put("alter", outcome(admin, Map.of(resource, List.of(
                    op("max.message.bytes", "2048", AlterConfigOp.OpType.SET),
                    op("retention.ms", null, AlterConfigOp.OpType.DELETE),
                    op("cleanup.policy", "compact", AlterConfigOp.OpType.APPEND))), false));
            summary.put("after_alter", dynamic(admin, resource));

            summary.put("validate_only", outcome(admin, Map.of(resource, List.of(
                    op("cleanup.policy", "delete", AlterConfigOp.OpType.SUBTRACT))), true));
            summary.put("bad_value", outcome(admin, Map.of(resource, List.of(
                    op("segment.bytes", "13", AlterConfigOp.OpType.SET))), false));
            summary.put("after_refusals", dynamic(admin, resource));

            summary.put("broker_default", outcome(admin, Map.of(clusterDefault, List.of(
                    op("log.retention.ms", "3600000", AlterConfigOp.OpType.SET))), false));
            summary.put("topic_retention", entry(describe(admin, resource).get("retention.ms")));
        }
        System.out.println(Json.write(summary));
    }

    static AlterConfigOp op(String name, String value, AlterConfigOp.OpType type) {
        return new AlterConfigOp(new ConfigEntry(name, value), type);
    }

    /** "ok", or the exception's class and message. */
    static String outcome(Admin admin, Map<ConfigResource, Collection<AlterConfigOp>> ops,
            boolean validateOnly) throws InterruptedException {
        try {
            admin.incrementalAlterConfigs(ops, new AlterConfigsOptions().validateOnly(validateOnly))
                    .all().get();
            return "ok";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName() + ": " + e.getCause().getMessage();
        }
    }

    static Config describe(Admin admin, ConfigResource resource) throws Exception {
        return admin.describeConfigs(List.of(resource), new DescribeConfigsOptions().includeSynonyms(true))
                .all().get().get(resource);
    }

    /** The topic's own configs: name to [value, source, synonyms]. */
    static Map<String, Object> dynamic(Admin admin, ConfigResource resource) throws Exception {
        Map<String, Object> configs = new TreeMap<>();
        for (ConfigEntry entry : describe(admin, resource).entries()) {
            if (entry.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG) {
                configs.put(entry.name(), entry(entry));
            }
        }
        return configs;
    }

    static List<Object> entry(ConfigEntry entry) {
        List<Object> synonyms = new ArrayList<>();
        for (ConfigEntry.ConfigSynonym synonym : entry.synonyms()) {
            synonyms.add(synonym.source() + ":" + synonym.name() + "=" + synonym.value());
        }
        return List.of(entry.value(), entry.source().toString(), synonyms);
    }
}
