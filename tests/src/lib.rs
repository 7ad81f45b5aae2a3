//! Shared pieces of MAT's end-to-end tests: guards for what a test creates in the kernel, frame
//! builders, and a model of the translation rules.

pub mod capture;
pub mod daemon;
pub mod frames;
pub mod guest;
pub mod legacy;
pub mod libvirt;
pub mod model;
pub mod netns;
pub mod pins;
pub mod switch;
pub mod tap;
pub mod topology;
