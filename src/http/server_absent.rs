//! The server of a build without the `http` feature: a type that is never built, so that the gateway
//! keeps one shape. The configuration check refuses `[http]` in this build, saying how to get the page.

use std::convert::Infallible;
use std::net::SocketAddr;

/// Never built in this build.
pub struct HttpServer {
    pub local_addr: SocketAddr,
    never: Infallible,
}

impl HttpServer {
    pub async fn stop(self) {
        match self.never {}
    }
}
