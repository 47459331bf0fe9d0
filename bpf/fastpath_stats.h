/* SPDX-License-Identifier: MIT */
/*
 * Counter indexes of the probe matcher and the CID demux programs.  They belong next to
 * enum warp_ka_stat in include/warpgate/wire.h; until they move there, BPF code and the
 * loader both include this file (the loader by relative path).
 */
#ifndef WARP_BPF_FASTPATH_STATS_H
#define WARP_BPF_FASTPATH_STATS_H

#ifndef WARP_HAVE_PROBE_STATS
enum warp_probe_stat {
	WARP_PROBE_STAT_MATCH = 0, /* reply matched an outstanding id: event emitted */
	WARP_PROBE_STAT_MISS,	   /* STUN response or probe reply with an unknown id */
	WARP_PROBE_STAT_RB_FULL,   /* matched, but the ring buffer had no room */
	WARP_PROBE_STAT_MAX,
};

enum warp_cid_stat {
	WARP_CID_STAT_ROUTED = 0, /* CID found: steered to its owner */
	WARP_CID_STAT_UNKNOWN,	  /* warpgate packet, CID not routed: default socket */
	WARP_CID_STAT_NOT_WARP,	  /* STUN, TURN, garbage: default socket */
	WARP_CID_STAT_SELECT_ERR, /* owner slot empty: default socket */
	WARP_CID_STAT_MAX,
};
#endif

#endif
