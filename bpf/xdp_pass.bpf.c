// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * Trivial XDP_PASS program.  A veth only delivers frames that its peer sends with XDP_TX or
 * XDP_REDIRECT when it runs an XDP program itself (that is what switches on its NAPI receive
 * path), so the far end of a veth facing a keepalive responder loads this.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("xdp")
int warp_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
