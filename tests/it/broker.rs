//! What Keel relies on from the broker, as Kafka documents it (ADR 0008): a fetch from
//! an offset inside a record batch delivers that offset next (projectors resume from
//! the offset they stored), and ListOffsets(latest) is the high watermark (the replay
//! tools read up to it). tansu 0.6 needed a patch for both.

use std::time::Duration;

use keel_tests::TestEnv;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const MESSAGES: i64 = 200;

#[tokio::test]
async fn a_consumer_resuming_inside_a_batch_gets_the_rest_of_it_and_the_high_watermark_is_the_end() {
    let env = TestEnv::new().await;
    // The relay's producer, sent at once: the messages travel in a few large batches.
    let producer =
        keel_commands::kafka::producer(&env.brokers, keel_domain::limits::DEFAULT_MESSAGE_MAX_BYTES).expect("producer");
    let payloads: Vec<String> = (0..MESSAGES).map(|i| format!("message {i}")).collect();
    let deliveries: Vec<_> = payloads
        .iter()
        .map(|payload| {
            let record = FutureRecord::to(&env.topic).key("one-key").partition(0).payload(payload.as_str());
            producer.send_result(record).map_err(|(e, _)| e).expect("queue")
        })
        .collect();
    for delivery in deliveries {
        delivery.await.expect("delivered").map_err(|(e, _)| e).expect("acknowledged");
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", format!("broker-contract-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let watermarks = consumer.fetch_watermarks(&env.topic, 0, Duration::from_secs(10)).expect("watermarks");
    assert_eq!(watermarks, (0, MESSAGES), "ListOffsets: earliest 0, latest the end");

    // Resume at offsets that fall inside batches (odd ones, past the first).
    for start in [1, 37, 101, MESSAGES - 1] {
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&env.topic, 0, Offset::Offset(start)).expect("partition");
        consumer.assign(&assignment).expect("assign");
        let mut offsets = Vec::new();
        while offsets.len() < (MESSAGES - start) as usize {
            let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
                .await
                .unwrap_or_else(|_| panic!("from {start}: only {} messages, then nothing", offsets.len()))
                .expect("message");
            assert_eq!(message.payload_view::<str>(), Some(Ok(payloads[message.offset() as usize].as_str())));
            offsets.push(message.offset());
        }
        assert_eq!(offsets, (start..MESSAGES).collect::<Vec<_>>(), "from {start}: every offset, in order");
    }
}
