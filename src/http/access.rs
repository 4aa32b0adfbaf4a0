//! Who may do what on the page: HTTP Basic credentials checked by the broker's own login checker (the
//! same `[[broker.user]]` names and argon2 hashes, the same brake on repeated failures, the same argon2
//! slots: a guesser gains nothing by switching between MQTT and HTTP), then the user's `http` right.
//! Without credentials a request gets what `[http] anonymous` allows. Passwords are never logged; the
//! checker logs refusals rate-limited with the client's address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;

use super::settings::{Anonymous, HttpRight};
use crate::broker::auth::{LoginOutcome, Logins};

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No or wrong credentials: 401 with a Basic challenge.
    Unauthorized,
    /// A valid user without the right needed: 403.
    Forbidden,
}

/// The page's access rules.
pub struct Access {
    anonymous: Anonymous,
    rights: HashMap<String, HttpRight>,
    logins: Arc<Logins>,
}

impl Access {
    /// `rights`: the `http` right of each `[[broker.user]]` that has one; `logins`: the broker's checker.
    pub fn new(
        anonymous: Anonymous,
        rights: impl IntoIterator<Item = (String, HttpRight)>,
        logins: Arc<Logins>,
    ) -> Access {
        Access {
            anonymous,
            rights: rights.into_iter().collect(),
            logins,
        }
    }

    /// Whether `user` (a login [`Access::check`] let in; `None` for an anonymous reader) is an admin.
    pub fn is_admin(&self, user: Option<&str>) -> bool {
        user.and_then(|name| self.rights.get(name)) == Some(&HttpRight::Admin)
    }

    /// Lets a request with this `Authorization` header from `peer` do what needs `needed`; the user
    /// name when it logged in, `None` for an anonymous reader.
    pub async fn check(
        &self,
        peer: SocketAddr,
        authorization: Option<&str>,
        needed: HttpRight,
    ) -> Result<Option<String>, Refusal> {
        let Some(header) = authorization else {
            return match (self.anonymous, needed) {
                (Anonymous::Read, HttpRight::Read) => Ok(None),
                _ => Err(Refusal::Unauthorized),
            };
        };
        let Some((user, password)) = basic_credentials(header) else {
            return Err(Refusal::Unauthorized);
        };
        match self
            .logins
            .check(Some(peer), Some(&user), Some(password.as_bytes()))
            .await
        {
            LoginOutcome::Accepted => match self.rights.get(&user) {
                Some(right) if *right >= needed => Ok(Some(user)),
                _ => Err(Refusal::Forbidden),
            },
            LoginOutcome::BadCredentials | LoginOutcome::NotAuthorized => {
                Err(Refusal::Unauthorized)
            }
        }
    }
}

/// The user name and password of a `Basic` `Authorization` header.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::auth::Throttle;

    #[test]
    fn basic_credentials_are_decoded() {
        // "alice:open:sesame" (a colon inside the password is the password's).
        assert_eq!(
            basic_credentials("Basic YWxpY2U6b3BlbjpzZXNhbWU="),
            Some(("alice".into(), "open:sesame".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Basic YWxpY2U="), None, "no colon");
    }

    #[tokio::test]
    async fn rights_and_anonymous_reading() {
        let hash = crate::broker::hash_password("wonderland").unwrap();
        let logins = Arc::new(Logins::with_slots(
            [
                ("alice".to_string(), hash.clone()),
                ("bob".to_string(), hash),
            ],
            false,
            Throttle::default(),
            1,
        ));
        let access = Access::new(
            Anonymous::Read,
            [("alice".to_string(), HttpRight::Read)],
            logins,
        );
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let alice = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:wonderland")
        );
        let bob = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bob:wonderland")
        );
        assert_eq!(access.check(peer, None, HttpRight::Read).await, Ok(None));
        assert_eq!(
            access.check(peer, None, HttpRight::Admin).await,
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            access.check(peer, Some(&alice), HttpRight::Read).await,
            Ok(Some("alice".to_string()))
        );
        assert_eq!(
            access.check(peer, Some(&alice), HttpRight::Admin).await,
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            access.check(peer, Some(&bob), HttpRight::Read).await,
            Err(Refusal::Forbidden),
            "a broker user without http has no web access"
        );
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:guess")
        );
        assert_eq!(
            access.check(peer, Some(&wrong), HttpRight::Read).await,
            Err(Refusal::Unauthorized)
        );
    }
}
