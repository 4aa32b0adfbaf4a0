//! Wiring. (Skeleton.)
