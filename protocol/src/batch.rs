//! placeholder: written by the storage work
