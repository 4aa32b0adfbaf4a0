//! Device registry. (Skeleton.)
