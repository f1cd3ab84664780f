package xmppclient

import "syscall"

// setQuickAck asks the kernel to ACK what it has received at once instead
// of delaying the ACK; Linux clears the flag by itself, so it is set again
// after every read (see quickAckConn).
func setQuickAck(fd uintptr) {
	_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
}
