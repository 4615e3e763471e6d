//! Reading a build context as it streams (placeholder: being written).
