//! skald-controller
