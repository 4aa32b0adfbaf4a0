//! Configuration. (Skeleton.)
