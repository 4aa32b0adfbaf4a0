//! Routing follows the subscriptions at once: the broker remembers which subscriptions a topic name
//! goes to (`src/broker/route_cache.rs`), and a SUBSCRIBE, an UNSUBSCRIBE or a session's end that
//! changes them is seen by the very next publish on that topic.
//!
//! Absence is shown by order, not by waiting: one publisher's messages reach one subscriber in the
//! order they were routed, so a message routed wrongly before a fence message would arrive before it.

use sensorgate_testkit::broker as support;
use sensorgate_testkit::mqtt::{self, Subscriber};

use std::time::Duration;

use sensorgate::broker::Broker;

const WITHIN: Duration = Duration::from_secs(10);

/// The payload of the next message `subscriber` gets.
async fn next(subscriber: &mut Subscriber) -> String {
    subscriber.next(WITHIN).await.expect("a message").text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_or_dropped_after_a_topic_was_routed_counts_for_its_next_message() {
    let broker = Broker::start(&support::local_settings(), None)
        .await
        .unwrap();
    let addr = broker.local_addrs()[0];
    let mut first = mqtt::subscribe(addr, "first", "r/x", 0).await;
    support::gateway_publish(&broker, "r/x", "1", false).await;
    assert_eq!(next(&mut first).await, "1");

    // A second subscriber, on a wildcard, after "r/x" was routed.
    let mut second = mqtt::subscribe(addr, "second", "r/+", 0).await;
    support::gateway_publish(&broker, "r/x", "2", false).await;
    assert_eq!(next(&mut second).await, "2", "a new subscription");
    assert_eq!(next(&mut first).await, "2");

    // The first drops "r/x" but keeps a fence topic. Its UNSUBSCRIBE is done once a publish it sends
    // after it has reached the second subscriber.
    first
        .client
        .subscribe("fence/first", mqtt::qos(0))
        .await
        .unwrap();
    first.client.unsubscribe("r/x").await.unwrap();
    first
        .client
        .publish("r/sync", mqtt::qos(0), false, "sync")
        .await
        .unwrap();
    assert_eq!(next(&mut second).await, "sync");
    support::gateway_publish(&broker, "r/x", "3", false).await;
    support::gateway_publish(&broker, "fence/first", "fence", false).await;
    assert_eq!(next(&mut second).await, "3");
    assert_eq!(
        next(&mut first).await,
        "fence",
        "nothing on the topic it unsubscribed from"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_with_its_session_for_the_next_message_on_its_topic() {
    let broker = Broker::start(&support::local_settings(), None)
        .await
        .unwrap();
    let addr = broker.local_addrs()[0];
    let mut gone = mqtt::subscribe(addr, "comes-back", "s/x", 0).await;
    support::gateway_publish(&broker, "s/x", "1", false).await;
    assert_eq!(next(&mut gone).await, "1");
    drop(gone); // the connection closes; its clean session ends with its subscriptions

    // The same client id again, clean, subscribed to the fence only, once the old session is gone.
    let mut back = mqtt::subscribe(addr, "comes-back", "fence/back", 0).await;
    let mut session_gone = false;
    for _ in 0..100 {
        if broker.connections() == 1 {
            session_gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(session_gone, "the old connection ended within 5 s");
    support::gateway_publish(&broker, "s/x", "2", false).await;
    support::gateway_publish(&broker, "fence/back", "fence", false).await;
    assert_eq!(
        next(&mut back).await,
        "fence",
        "nothing on the old session's topic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_route_cache_is_forgotten_counted_and_still_routes_every_topic() {
    use sensorgate::broker::route_cache::CACHED_TOPICS;

    let broker = Broker::start(&support::local_settings(), None)
        .await
        .unwrap();
    let addr = broker.local_addrs()[0];
    let mut subscriber = mqtt::subscribe(addr, "all", "many/#", 0).await;
    for n in 0..CACHED_TOPICS {
        support::gateway_publish(&broker, &format!("many/{n}"), &n.to_string(), false).await;
        assert_eq!(next(&mut subscriber).await, n.to_string());
    }
    assert_eq!(
        broker.counters().routes_forgotten,
        0,
        "the cache holds them all"
    );

    // One topic more finds it full: it is emptied (every topic so far forgotten) and starts again.
    support::gateway_publish(&broker, "many/one-more", "more", false).await;
    assert_eq!(next(&mut subscriber).await, "more");
    assert_eq!(broker.counters().routes_forgotten, CACHED_TOPICS as u64);
    support::gateway_publish(&broker, "many/0", "again", false).await;
    assert_eq!(
        next(&mut subscriber).await,
        "again",
        "a forgotten topic is matched afresh"
    );
}
