//go:build !linux

package xmppclient

// setQuickAck does nothing: TCP_QUICKACK is Linux-only. Elsewhere the
// delayed-ACK stall described at quickAckConn may remain.
func setQuickAck(uintptr) {}
