//! Table-driven tests of the Engine's handlers: each feeds one input to a known state and
//! compares the whole command list.
