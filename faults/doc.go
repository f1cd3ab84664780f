// Package faults holds the kill suite: it runs the real sniper binary
// against a real Prosody, kills it (SIGKILL) at random moments and at the
// fault points where a crash is most likely to lose or repeat something,
// restarts it on the same data dir, and checks the log and the wire
// against an uninterrupted run of the same script.
//
// `make test` runs a short version; `make faults` runs 200 kills
// (SNIPER_FAULT_KILLS).
package faults
