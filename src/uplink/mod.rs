//! The uplink. (Skeleton.)
