//! Serial source. (Skeleton.)
