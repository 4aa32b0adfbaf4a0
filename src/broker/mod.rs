//! The embedded broker. (Skeleton.)
