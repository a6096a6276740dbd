//! Node.js binding.
