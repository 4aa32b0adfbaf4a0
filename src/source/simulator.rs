//! Simulator source. (Skeleton.)
