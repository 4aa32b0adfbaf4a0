//! systemd integration. (Skeleton.)
