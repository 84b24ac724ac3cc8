"""Network pieces of the virtual IP: the address rule, the kernel's addresses (through ``ip``) and the
announcements (gratuitous ARP, unsolicited neighbour advertisements)."""
