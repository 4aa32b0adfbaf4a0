//! Test helpers: broker settings on 127.0.0.1:0 with users, cheap password hashes (argon2id with tiny
//! costs, so debug-build tests stay fast; the broker verifies any argon2 PHC string with its own costs),
//! and a publish as the gateway itself.
#![allow(dead_code)]

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use sensorgate::broker::{Broker, BrokerSettings, ListenerSettings, UserSettings};
use sensorgate::model::Message;

/// An argon2id PHC string with minimal costs.
pub fn cheap_hash(password: &str) -> String {
    let params = Params::new(64, 1, 1, None).expect("valid argon2 params");
    let salt = SaltString::encode_b64(b"sensorgate-tests").expect("salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

pub fn user(name: &str, password: &str, read: &[&str], write: &[&str]) -> UserSettings {
    UserSettings {
        name: name.to_string(),
        password_hash: cheap_hash(password),
        read: read.iter().map(|s| s.to_string()).collect(),
        write: write.iter().map(|s| s.to_string()).collect(),
    }
}

/// Default settings with one plain listener on an ephemeral loopback port.
pub fn local_settings() -> BrokerSettings {
    BrokerSettings {
        listeners: vec![ListenerSettings {
            bind: "127.0.0.1:0".parse().expect("addr"),
            tls: None,
        }],
        ..BrokerSettings::default()
    }
}

/// Publishes `payload` on `topic` in-process, as the gateway does (QoS 1).
pub async fn gateway_publish(broker: &Broker, topic: &str, payload: &str, retain: bool) {
    broker
        .publish(&Message {
            topic: topic.into(),
            payload: payload.as_bytes().to_vec(),
            qos: 1,
            retain,
        })
        .await
        .expect("an in-process publish");
}
