//! The OpenPipeline sender (work in progress).
