//! Framing: bytes from a stream -> frames. (Skeleton; the framing helper owns this module.)

/// Why a frame was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame longer than {max} bytes")]
    TooLong { max: usize },
}
