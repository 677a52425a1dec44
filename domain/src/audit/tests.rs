use chrono::TimeZone;

use super::*;

fn input(n: i64) -> AuditInput {
    AuditInput {
        timestamp: Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap() + chrono::Duration::nanoseconds(n * 1_234_567),
        tenant_id: Some("tnt_01jd0000000000000000000001".into()),
        actor_type: "operator".into(),
        actor_id: "op".into(),
        action: "tenant.suspend".into(),
        resource: "tenant/tnt_01jd0000000000000000000001".into(),
        outcome: Outcome::Success,
        reason: None,
        source: "keel".into(),
        source_event_id: None,
        metadata: Map::from_iter([("correlation_id".to_string(), Value::from(format!("c{n}")))]),
    }
}

fn chain(n: i64) -> Vec<AuditEntry> {
    let mut prev = GENESIS.to_string();
    (1..=n)
        .map(|seq| {
            let entry = input(seq).chained(Uuid::now_v7(), seq, &prev);
            prev = entry.hash.clone();
            entry
        })
        .collect()
}

fn verify(entries: &[AuditEntry]) -> Result<(), Break> {
    let mut verifier = ChainVerifier::default();
    entries.iter().try_for_each(|e| verifier.push(e))
}

#[test]
fn an_untouched_chain_verifies() {
    assert_eq!(verify(&chain(5)), Ok(()));
}

#[test]
fn the_hash_survives_a_round_trip_through_json() {
    let entry = &chain(1)[0];
    let back: AuditEntry = serde_json::from_str(&serde_json::to_string(entry).unwrap()).unwrap();
    assert_eq!(back.record.hash(), entry.hash);
    assert_eq!(entry.record.timestamp, "2026-11-22T10:00:00.001234Z", "microseconds, as Postgres keeps them");
}

#[test]
fn an_edited_record_is_named() {
    let mut entries = chain(4);
    entries[2].record.actor_id = "someone else".into();
    match verify(&entries) {
        Err(Break::HashMismatch { seq, id, found, .. }) => {
            assert_eq!((seq, id, found), (3, entries[2].record.id, entries[2].hash.clone()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_deleted_record_is_a_gap() {
    let mut entries = chain(4);
    entries.remove(1);
    assert!(matches!(verify(&entries), Err(Break::SequenceGap { expected: 2, found: 3, .. })));
}

#[test]
fn reordered_records_are_caught() {
    let mut entries = chain(4);
    entries.swap(1, 2);
    assert!(matches!(verify(&entries), Err(Break::SequenceGap { expected: 2, found: 3, .. })));
    // Renumbered to hide the swap: the links no longer match.
    entries[1].record.seq = 2;
    entries[2].record.seq = 3;
    assert!(matches!(verify(&entries), Err(Break::LinkMismatch { seq: 2, .. })));
}

#[test]
fn a_rewritten_chain_is_caught_by_the_checkpoint() {
    let original = chain(3);
    let head = ChainHead { chain: original[2].record.chain.clone(), seq: 3, hash: original[2].hash.clone() };
    let checkpoint = Checkpoint {
        number: 1,
        signed_at: canonical_time(Utc::now()),
        heads: vec![head],
        key_id: "k".into(),
        signature: String::new(),
    };
    // Someone edits record 2 and recomputes every hash after it: the links hold, the checkpoint does not.
    let mut forged = original.clone();
    forged[1].record.actor_id = "forger".into();
    forged[1].hash = forged[1].record.hash();
    forged[2].record.prev_hash = forged[1].hash.clone();
    forged[2].hash = forged[2].record.hash();
    let mut verifier = ChainVerifier::default();
    forged.iter().try_for_each(|e| verifier.push(e)).unwrap();
    assert!(matches!(verifier.check_heads(&checkpoint), Err(Break::CheckpointMismatch { seq: 3, .. })));
    let mut honest = ChainVerifier::default();
    original.iter().try_for_each(|e| honest.push(e)).unwrap();
    assert_eq!(honest.check_heads(&checkpoint), Ok(()));
}

#[test]
fn actions_name_the_object_then_the_verb() {
    assert_eq!(action_of("ProvisionTenant"), "tenant.provision");
    assert_eq!(action_of("ChangeUserRole"), "user.role.change");
    assert_eq!(action_of("IssueApiKey"), "api.key.issue");
}

#[test]
fn the_canonical_form_is_the_sorted_json_of_the_record() {
    let mut entry = chain(1).remove(0);
    entry.record.metadata.insert("nested".into(), serde_json::json!({ "z": 1, "a": [true, null, "é\"\n"] }));
    entry.record.reason = Some("why".into());
    let by_value = serde_json::to_value(&entry.record).unwrap().to_string();
    let mut written = Vec::new();
    entry.record.write_canonical(&mut written);
    assert_eq!(String::from_utf8(written).unwrap(), by_value);
}

#[test]
fn a_record_delivered_again_is_a_repeat_but_a_changed_copy_is_caught() {
    let entries = chain(4);
    // The relay's at-least-once delivery: records 2 and 3 published a second time.
    let mut delivered = entries.clone();
    delivered.extend([entries[1].clone(), entries[2].clone()]);
    let mut verifier = ChainVerifier::default();
    for entry in &delivered {
        verifier.push(entry).expect("repeats are not breaks");
    }
    assert_eq!((verifier.records, verifier.repeats), (4, 2));
    // A copy at an old place that differs from what was checked there is a break.
    let mut forged = entries[1].clone();
    forged.record.actor_id = "someone-else".into();
    forged.hash = forged.record.hash();
    assert!(matches!(verifier.push(&forged), Err(Break::SequenceGap { expected: 5, found: 2, .. })));
}
