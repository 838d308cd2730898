//! bottle's docker backend (in progress)
