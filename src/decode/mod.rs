//! Decoding: packets -> readings. (Skeleton.)
