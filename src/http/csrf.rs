//! Cross-site request forgery: a browser that holds a login for the page (HTTP Basic credentials it
//! remembers) sends them with any request to the page's address, also one another site's page makes
//! it send (a form posted to `/api/forget`). So an admin request (POST) must carry the header
//! [`ADMIN_HEADER`], which the page's own script sets: a form cannot set a header, and a script of
//! another origin can only by asking first with a CORS preflight, which this server never grants (it
//! sends no `Access-Control-Allow-*`). A request whose `Origin` names another site than its `Host` is
//! refused as well. Clients that are not browsers (curl, scripts) add the header themselves.

use super::request::Request;

/// The header an admin request must carry (any non-empty value; the page sends `page`).
pub const ADMIN_HEADER: &str = "x-sensorgate-request";

/// Why an admin request looks forged, or `None` when it may go on to the login check.
pub fn forged(request: &Request) -> Option<&'static str> {
    if request.header(ADMIN_HEADER).is_none_or(str::is_empty) {
        return Some(
            "admin requests need the header X-Sensorgate-Request (the page sends it; add it to scripts)",
        );
    }
    if let Some(origin) = request.header("origin") {
        let host = request.header("host").unwrap_or_default();
        let same = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.strip_prefix(scheme) == Some(host));
        if !same {
            return Some("admin requests from another site's page are refused");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "POST".into(),
            path: "/api/forget".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            close: true,
        }
    }

    #[test]
    fn only_requests_with_the_header_and_from_the_same_origin_pass() {
        assert!(forged(&post(&[])).is_some(), "a plain form post");
        assert!(forged(&post(&[(ADMIN_HEADER, "")])).is_some());
        assert_eq!(forged(&post(&[(ADMIN_HEADER, "page")])), None, "curl");
        let host = ("host", "127.0.0.1:8088");
        assert_eq!(
            forged(&post(&[
                (ADMIN_HEADER, "page"),
                host,
                ("origin", "http://127.0.0.1:8088")
            ])),
            None
        );
        assert_eq!(
            forged(&post(&[
                (ADMIN_HEADER, "page"),
                host,
                ("origin", "https://127.0.0.1:8088")
            ])),
            None
        );
        for origin in ["http://evil.example", "null", "http://127.0.0.1:8088.evil"] {
            assert!(
                forged(&post(&[(ADMIN_HEADER, "page"), host, ("origin", origin)])).is_some(),
                "{origin}"
            );
        }
    }
}
