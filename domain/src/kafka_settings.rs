//! The rule that turns `KEEL_KAFKA_*` environment variables into librdkafka settings,
//! shared by every Kafka client Keel makes (the relay's producer, the projectors' and
//! tools' consumers, the admin client). Pure: the callers read the environment.
//!
//! `KEEL_KAFKA_SECURITY_PROTOCOL=SASL_SSL` becomes `security.protocol=SASL_SSL`: the
//! rest of the name, lowercased, `_` read as `.`. Keel's own settings under the same
//! prefix ([`KEEL_OWNED`]) are not passed through.

/// The prefix of passed-through variables.
pub const PREFIX: &str = "KEEL_KAFKA_";

/// `KEEL_KAFKA_*` variables that are Keel's own settings, not librdkafka's.
pub const KEEL_OWNED: &[&str] = &["BROKERS", "PARTITIONS", "SESSION_TIMEOUT_MS", "REPLICATION", "MESSAGE_MAX_BYTES"];

/// The librdkafka settings named by `vars` (name, value), sorted by name.
pub fn from_env_vars(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(PREFIX)?;
            let valid = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            (valid && !KEEL_OWNED.contains(&rest)).then(|| (rest.to_ascii_lowercase().replace('_', "."), value))
        })
        .collect();
    settings.sort();
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keel_kafka_variables_become_librdkafka_settings() {
        let settings = from_env_vars(vars(&[
            ("KEEL_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KEEL_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("KEEL_KAFKA_SASL_PASSWORD", "s3cret"),
            ("KEEL_KAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
            ("PATH", "/usr/bin"),
        ]));
        assert_eq!(
            settings,
            vars(&[
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.password", "s3cret"),
                ("security.protocol", "SASL_SSL"),
                ("ssl.ca.location", "/etc/ca.pem"),
            ])
        );
    }

    #[test]
    fn keel_own_settings_and_odd_names_stay_out() {
        let settings = from_env_vars(vars(&[
            ("KEEL_KAFKA_BROKERS", "b:9092"),
            ("KEEL_KAFKA_PARTITIONS", "12"),
            ("KEEL_KAFKA_SESSION_TIMEOUT_MS", "1000"),
            ("KEEL_KAFKA_REPLICATION", "3"),
            ("KEEL_KAFKA_MESSAGE_MAX_BYTES", "2000000"),
            ("KEEL_KAFKA_", "x"),
            ("KEEL_KAFKA_BAD-NAME", "x"),
            ("KEEL_KAFKAX", "x"),
        ]));
        assert_eq!(settings, Vec::new());
    }
}
