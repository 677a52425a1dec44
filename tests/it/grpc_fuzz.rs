//! Suite 2 of issue 13: descriptor-driven gRPC fuzzing. Every `keel.v1` method, taken from
//! the reflection descriptors (a new method is fuzzed by default), gets generated messages
//! — empty, edge and random values in every field, unknown enum values, garbage bytes —
//! without a credential, as an operator and as a tenant user. No answer may be `INTERNAL`
//! or `UNKNOWN`, no task may panic, and Keel must still serve afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use keel_tests::TestEnv;

use crate::dynamic::{call, channel, encode, keel_methods};
use crate::support::{domain, provision, tenant_client, tenant_with_owner};

/// Messages per method and credential.
const CASES: usize = 4;

/// Panics anywhere in this process (Keel runs in-process) since the hook was installed.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Strings that have broken parsers before: empty, blanks, control and bidi characters,
/// SQL and format syntax, numbers, ids of the wrong kind, a long run.
fn edge_strings(tenant: &str) -> Vec<String> {
    vec![
        String::new(),
        " ".into(),
        "\u{0}".into(),
        "ünïcødé 🦀 \u{202e}ltr".into(),
        "'; DROP TABLE events; --".into(),
        "%s%n{}{{}}".into(),
        "-1".into(),
        "9223372036854775808".into(),
        "tnt_01jd0000000000000000000000".into(),
        "usr_01jd0000000000000000000000".into(),
        tenant.to_string(),
        "=cmd|' /C calc'!A0".into(),
        "x".repeat(5_000),
        "é".repeat(70_000),
    ]
}

struct Generator {
    rng: StdRng,
    strings: Vec<String>,
}

impl Generator {
    fn string(&mut self) -> String {
        if self.rng.random_bool(0.6) {
            let i = self.rng.random_range(0..self.strings.len());
            self.strings[i].clone()
        } else {
            let len = self.rng.random_range(0..64);
            (0..len).map(|_| char::from_u32(self.rng.random_range(1..0x2_0000)).unwrap_or('?')).collect()
        }
    }

    fn scalar(&mut self, field: &FieldDescriptor) -> Value {
        let pick = |rng: &mut StdRng, options: &[i64]| options[rng.random_range(0..options.len())];
        match field.kind() {
            Kind::String => Value::String(self.string()),
            Kind::Bytes => {
                let len = self.rng.random_range(0..256);
                Value::Bytes((0..len).map(|_| self.rng.random::<u8>()).collect::<Vec<u8>>().into())
            }
            Kind::Bool => Value::Bool(self.rng.random()),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                let edges = [0, -1, 1, i64::from(i32::MIN), i64::from(i32::MAX), self.rng.random::<i32>().into()];
                Value::I32(pick(&mut self.rng, &edges) as i32)
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                let edges = [0, -1, 1, i64::MIN, i64::MAX, self.rng.random()];
                Value::I64(pick(&mut self.rng, &edges))
            }
            Kind::Uint32 | Kind::Fixed32 => {
                Value::U32([0, 1, u32::MAX, self.rng.random()][self.rng.random_range(0..4)])
            }
            Kind::Uint64 | Kind::Fixed64 => {
                Value::U64([0, 1, u64::MAX, self.rng.random()][self.rng.random_range(0..4)])
            }
            Kind::Float => Value::F32([0.0, -0.0, f32::NAN, f32::INFINITY, f32::MIN, 1.5][self.rng.random_range(0..6)]),
            Kind::Double => {
                Value::F64([0.0, -0.0, f64::NAN, f64::NEG_INFINITY, f64::MAX, 1e-300][self.rng.random_range(0..6)])
            }
            // Known values, and numbers no enum declares.
            Kind::Enum(e) => {
                let known: Vec<i32> = e.values().map(|v| v.number()).collect();
                let options = [known[self.rng.random_range(0..known.len())], 999, -7, i32::MAX];
                Value::EnumNumber(options[self.rng.random_range(0..options.len())])
            }
            Kind::Message(m) => Value::Message(self.message(&m, 1)),
        }
    }

    fn value(&mut self, field: &FieldDescriptor, depth: usize) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else { unreachable!("a map field is a message") };
            let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let n = self.rng.random_range(0..4);
            let mut map = std::collections::HashMap::new();
            for _ in 0..n {
                if let Some(k) = self.scalar(&key).into_map_key() {
                    map.insert(k, self.field_value(&value, depth));
                }
            }
            return Value::Map(map);
        }
        if field.is_list() {
            // Mostly a few items; now and then a long list.
            let n = if self.rng.random_bool(0.1) { 300 } else { self.rng.random_range(0..4) };
            return Value::List((0..n).map(|_| self.field_value(field, depth)).collect());
        }
        self.field_value(field, depth)
    }

    fn field_value(&mut self, field: &FieldDescriptor, depth: usize) -> Value {
        match field.kind() {
            Kind::Message(m) => Value::Message(self.message(&m, depth + 1)),
            _ => self.scalar(field),
        }
    }

    /// A message with each field set with probability 3/4 (nesting stops at depth 4).
    fn message(&mut self, descriptor: &MessageDescriptor, depth: usize) -> DynamicMessage {
        let mut message = DynamicMessage::new(descriptor.clone());
        if depth > 4 {
            return message;
        }
        for field in descriptor.fields() {
            if self.rng.random_bool(0.75) {
                let value = self.value(&field, depth);
                message.set_field(&field, value);
            }
        }
        message
    }

    /// Case `n` of a method: the empty message, every field at an edge, random, or bytes that
    /// are no protobuf message at all.
    fn case(&mut self, input: &MessageDescriptor, n: usize) -> Vec<u8> {
        match n % CASES {
            0 => Vec::new(),
            1 | 2 => encode(&self.message(input, 0)),
            _ => {
                let len = self.rng.random_range(1..64);
                (0..len).map(|_| self.rng.random::<u8>()).collect()
            }
        }
    }
}

#[tokio::test]
async fn every_keel_v1_method_survives_generated_input_without_internal_errors_or_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (tenant, _, _, user) = tenant_with_owner(&env, &keel, &operator, "fuzz").await;

    let seed = std::env::var("KEEL_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("fuzz seed {seed} (KEEL_FUZZ_SEED={seed} repeats this run)");
    let mut generator = Generator { rng: StdRng::seed_from_u64(seed), strings: edge_strings(&tenant) };
    let channel = channel(keel.grpc_addr).await;
    let credentials: [(&str, Option<&str>); 3] =
        [("anonymous", None), ("operator", Some(&operator)), ("user", Some(&user))];

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let methods = keel_methods();
    for method in &methods {
        for (who, token) in credentials {
            for n in 0..CASES {
                let messages = if method.is_client_streaming() {
                    (0..n).map(|i| generator.case(&method.input(), i + 1)).collect()
                } else {
                    vec![generator.case(&method.input(), n)]
                };
                let code = match call(&channel, method, messages, token).await {
                    Ok(_) => Code::Ok,
                    Err(status) => {
                        if matches!(status.code(), Code::Internal | Code::Unknown) {
                            failures.push(format!("{} as {who}, case {n}: {status:?}", method.full_name()));
                        }
                        status.code()
                    }
                };
                *seen.entry(format!("{code:?}")).or_default() += 1;
            }
        }
    }
    let calls: usize = seen.values().sum();
    println!("{calls} calls over {} methods; statuses: {seen:?}", methods.len());
    assert!(
        failures.is_empty(),
        "{} of {calls} calls answered INTERNAL or UNKNOWN:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked during the fuzzing");

    // Keel still serves: a real command goes through.
    let mut tenants = tenant_client(keel.grpc_addr).await;
    provision(&mut tenants, &operator, &domain("after-fuzz")).await;
    keel.stop().await;
}
