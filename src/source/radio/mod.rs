//! LoRa radio sources. (Skeleton.)
