// SPDX-License-Identifier: GPL-2.0
// The GWLB node's eBPF fast path for established flows. One object is one node's
// instance: the node (Python) owns the maps and decides what goes in them; these
// programs only repeat, in the kernel, the encap/decap the node already chose.
//
// gwlb_encap        tc ingress of each endpoint veth: an inner IPv4 packet whose flow
//                   is in `flows` gets outer IPv4 + UDP + the flow's 40-byte GENEVE
//                   header and leaves by the uplink; the kernel's FIB and neighbour
//                   tables pick next hop and MACs (bpf_redirect_neigh).
// gwlb_decap        tc ingress of the uplink: a GENEVE return whose exact 40-byte
//                   header is in `returns` loses its outer headers, gets the endpoint
//                   veth's MACs and leaves by the endpoint veth.
// gwlb_ring_filter  socket filter of the slow path's AF_PACKET ring on the endpoint
//                   veths. Taps see frames BEFORE tc ingress, so the ring must hide
//                   exactly the frames gwlb_encap takes: both call classify_inner().
//
// Everything else is TC_ACT_OK: the Python node (slow path) handles it as before.
// GSO skbs are slow path in all three programs (see classify_inner): the adjust_room
// encap of a GSO super-packet would need UDP-tunnel GSO and per-segment size checks,
// and the lab's ENIs run with tx offload off, so GSO is rare here.
//
// Build: python3 -m vpclab.engines.gwlb.fastpath build
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define GENEVE_PORT 6081
#define GENEVE_LEN 40                          /* the GWLB header: 8 + 3 options */
#define OUTER_LEN (20 + 8 + GENEVE_LEN)        /* outer IPv4 + UDP + GENEVE */
#define MAX_INNER 8500                         /* AWS's limit behind an endpoint */
#define MAX_FLOWS 65536
#define IP_MF_OFFSET 0x3fff                    /* MF flag and fragment offset */
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

/* Keep in sync with fastpath.py (FLOW_KEY, FLOW_VALUE, RETURN_VALUE, CONFIG_VALUE, COUNTERS). */
struct flow_key {
    __u32 ifindex;          /* the endpoint veth: endpoints may carry colliding addresses */
    __u32 saddr, daddr;     /* network order */
    __u16 sport, dport;     /* network order */
    __u8 proto, pad[3];
};

struct flow_value {
    __u32 uplink_ifindex;
    __u32 node_ip, target_ip;   /* network order */
    __u16 src_port;             /* network order: the flow's outer UDP source port */
    __u16 pad;
    __u8 geneve[GENEVE_LEN];    /* the flow's exact GWLB GENEVE header */
    __u64 packets, bytes;       /* bytes: inner IP bytes */
    __u64 last_seen_ns;         /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
};

struct return_key {
    __u8 geneve[GENEVE_LEN];    /* returns match by the header's bytes, as in the core */
};

struct return_value {
    __u32 endpoint_ifindex;
    __u32 target_ip;            /* network order: the expected outer source */
    __u16 src_port;             /* network order: appliances may answer to it instead of 6081 */
    __u16 pad;
    __u8 eth[12];               /* dst = router side of the endpoint veth, src = node side */
    __u64 packets, bytes, last_seen_ns;
};

struct config {
    __u32 node_ip;              /* network order; 0 = decap nothing */
    __u32 pad;
};

/* Per-CPU event counters, summed by fastpath.read_counters(). */
enum {
    C_ENCAP_HIT,        /* encapsulated and redirected */
    C_ENCAP_MISS,       /* eligible, no flow: slow path */
    C_ENCAP_SLOW,       /* not eligible (protocol, flags, options, fragment, size): slow path */
    C_ENCAP_GSO,        /* a flow's GSO skb: slow path (the ring filter shows it too) */
    C_ENCAP_ERROR,      /* adjust_room/store_bytes failed: dropped */
    C_DECAP_HIT,        /* decapsulated and redirected */
    C_DECAP_MISS,       /* GENEVE to the node with an unknown header: slow path */
    C_DECAP_MISMATCH,   /* known header, wrong outer source or port: slow path */
    C_DECAP_OVERSIZE,   /* inner packet over MAX_INNER: slow path (which drops it) */
    C_DECAP_GSO,        /* GSO/GRO skb: slow path */
    C_DECAP_ERROR,      /* adjust_room failed (slow path) or store_bytes failed (dropped) */
    C_DECAP_MALFORMED,  /* inner packet too short or not IPv4/IPv6: slow path (which drops it) */
    C_COUNT,
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, MAX_FLOWS);
    __type(key, struct flow_key);
    __type(value, struct flow_value);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, MAX_FLOWS);
    __type(key, struct return_key);
    __type(value, struct return_value);
} returns SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 16);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct config);
} config SEC(".maps");

static __always_inline void count(__u32 index)
{
    __u64 *c = bpf_map_lookup_elem(&counters, &index);
    if (c)
        *c += 1;  /* per-CPU: no atomics needed */
}

enum { INNER_SLOW, INNER_GSO, INNER_FAST };

/* The fast-path predicate, shared by gwlb_encap and gwlb_ring_filter so that they can
   never disagree (fastpath.fast_path_eligible mirrors it for the node): Ethernet IPv4,
   no options, not a fragment, total length <= MAX_INNER and equal to the frame's payload
   (no trailing bytes), UDP or TCP without SYN/FIN/RST; then gso_size == 0. Both program
   types see the frame from its MAC header (cls_bpf at ingress and AF_PACKET SOCK_RAW
   push it back), and bpf_skb_load_bytes works in both. */
static __always_inline int classify_inner(struct __sk_buff *skb, struct flow_key *key)
{
    struct {
        __be16 h_proto;
        struct iphdr ip;
        __be16 ports[2];
    } __attribute__((packed)) h;
    if (bpf_skb_load_bytes(skb, 12, &h, sizeof(h)))
        return INNER_SLOW;
    if (h.h_proto != bpf_htons(ETH_P_IP) || h.ip.version != 4 || h.ip.ihl != 5 ||
        (h.ip.frag_off & bpf_htons(IP_MF_OFFSET)))
        return INNER_SLOW;
    __u32 tot_len = bpf_ntohs(h.ip.tot_len);
    if (tot_len > MAX_INNER || tot_len != skb->len - ETH_HLEN)
        return INNER_SLOW;
    if (h.ip.protocol == IPPROTO_UDP) {
        if (tot_len < 20 + 8)
            return INNER_SLOW;
    } else if (h.ip.protocol == IPPROTO_TCP) {
        __u8 flags;
        if (tot_len < 20 + 20 || bpf_skb_load_bytes(skb, ETH_HLEN + 20 + 13, &flags, 1))
            return INNER_SLOW;
        if (flags & (TCP_SYN | TCP_FIN | TCP_RST))
            return INNER_SLOW;
    } else {
        return INNER_SLOW;
    }
    key->ifindex = skb->ifindex;
    key->saddr = h.ip.saddr;
    key->daddr = h.ip.daddr;
    key->sport = h.ports[0];
    key->dport = h.ports[1];
    key->proto = h.ip.protocol;
    return skb->gso_size ? INNER_GSO : INNER_FAST;
}

/* A per-CPU scratch buffer for the inner packet's last (< 512) bytes: tc programs do not
   migrate, and only gwlb_encap uses it. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u8[516]);  /* 512 + 4: the verifier's bound of the rounded-up size */
} scratch SEC(".maps");

/* The ones' complement sum of the inner packet (data + ETH_HLEN, `len` bytes), as
   bpf_csum_diff's 32-bit partial sum, for the outer UDP checksum AWS sends. The packet
   must be linear, so it is pulled first; 512-byte chunks are summed in place, then the
   tail (< 512 bytes) is copied into `scratch`, zero-padded to 4 bytes (RFC 1071 pads an
   odd tail) and summed in one call. One variable-length step, not a cascade of fixed
   sizes: each branch of a cascade doubled the paths the verifier walks (~259,000
   instructions and ~0.4 s per load). Returns a negative error when the packet cannot
   be summed. */
static __always_inline __s64 inner_sum(struct __sk_buff *skb, __u32 len)
{
    if (bpf_skb_pull_data(skb, ETH_HLEN + len))
        return -1;
    void *p = (void *)(long)skb->data + ETH_HLEN;
    void *end = (void *)(long)skb->data_end;
    __u32 off = ETH_HLEN;
    __s64 sum = 0;
    for (int i = 0; i < MAX_INNER / 512; i++) {  /* a bounded loop: the verifier walks it */
        if (len < 512)
            break;
        if (p + 512 > end)
            return -1;
        sum = bpf_csum_diff(NULL, 0, p, 512, sum);
        p += 512;
        off += 512;
        len -= 512;
    }
    if (len >= 512)  /* cannot happen (len <= MAX_INNER) */
        return -1;
    /* clang tests zero-extended copies of a __u32 and hands the helpers an unbounded
       register: a 64-bit tail, bounded by an AND it cannot drop (a no-op by now). */
    __u64 tail = len;
    asm volatile("%0 &= 0x1ff" : "+r"(tail));
    if (!tail)
        return sum;
    __u32 zero = 0;
    __u8 *buf = bpf_map_lookup_elem(&scratch, &zero);
    if (!buf)
        return -1;
    *(__u32 *)(buf + (tail & 0x1fc)) = 0;  /* the padding, before the bytes land */
    if (bpf_skb_load_bytes(skb, off, buf, tail))
        return -1;
    return bpf_csum_diff(NULL, 0, (__be32 *)buf, ((tail + 3) >> 2) << 2, sum);
}

static __always_inline __u16 fold(__u64 sum)
{
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return sum;
}

static __always_inline __u16 ipv4_checksum(const void *header)
{
    const __u16 *word = header;
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < 10; i++)
        sum += word[i];  /* one's complement sums do not care about byte order */
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum & 0xffff;
}

SEC("tc")
int gwlb_encap(struct __sk_buff *skb)
{
    struct flow_key key = {};
    int kind = classify_inner(skb, &key);
    if (kind == INNER_SLOW) {
        count(C_ENCAP_SLOW);
        return TC_ACT_OK;
    }
    struct flow_value *v = bpf_map_lookup_elem(&flows, &key);
    if (!v) {
        count(C_ENCAP_MISS);
        return TC_ACT_OK;
    }
    if (kind == INNER_GSO) {
        count(C_ENCAP_GSO);
        return TC_ACT_OK;
    }
    __u32 inner_len = skb->len - ETH_HLEN;
    __s64 payload_sum = inner_sum(skb, inner_len);
    if (payload_sum < 0) {
        count(C_ENCAP_ERROR);
        return TC_ACT_SHOT;  /* not TC_ACT_OK: the ring filter already hid it from the slow path */
    }
    struct {
        struct iphdr ip;
        struct udphdr udp;
        __u8 geneve[GENEVE_LEN];
    } __attribute__((packed)) outer = {};
    outer.ip.version = 4;
    outer.ip.ihl = 5;
    outer.ip.tot_len = bpf_htons(inner_len + OUTER_LEN);
    outer.ip.ttl = 255;
    outer.ip.protocol = IPPROTO_UDP;
    outer.ip.saddr = v->node_ip;
    outer.ip.daddr = v->target_ip;
    outer.ip.check = ipv4_checksum(&outer.ip);
    outer.udp.source = v->src_port;
    outer.udp.dest = bpf_htons(GENEVE_PORT);
    outer.udp.len = bpf_htons(inner_len + OUTER_LEN - 20);
    __builtin_memcpy(outer.geneve, v->geneve, GENEVE_LEN);
    /* UDP checksum: pseudo header (addresses, protocol, UDP length), UDP header with a
       zero checksum, GENEVE header, inner packet; a computed 0 goes as 0xffff (RFC 768). */
    struct {
        __be32 saddr, daddr;
        __u8 zero, protocol;
        __be16 udp_len;
        struct udphdr udp;
        __u8 geneve[GENEVE_LEN];
    } __attribute__((packed)) pseudo = {
        .saddr = outer.ip.saddr, .daddr = outer.ip.daddr, .protocol = IPPROTO_UDP,
        .udp_len = outer.udp.len, .udp = outer.udp,
    };
    __builtin_memcpy(pseudo.geneve, v->geneve, GENEVE_LEN);
    __u16 udp_check = ~fold(bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), payload_sum)) & 0xffff;
    outer.udp.check = udp_check ? udp_check : 0xffff;
    /* The Ethernet header stays in front: bpf_redirect_neigh wants one (then rewrites it). */
    if (bpf_skb_adjust_room(skb, OUTER_LEN, BPF_ADJ_ROOM_MAC,
                            BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP) ||
        bpf_skb_store_bytes(skb, ETH_HLEN, &outer, OUTER_LEN, 0)) {
        count(C_ENCAP_ERROR);
        return TC_ACT_SHOT;  /* not TC_ACT_OK: the ring filter already hid it from the slow path */
    }
    __sync_fetch_and_add(&v->packets, 1);
    __sync_fetch_and_add(&v->bytes, inner_len);
    v->last_seen_ns = bpf_ktime_get_ns();
    count(C_ENCAP_HIT);
    return bpf_redirect_neigh(v->uplink_ifindex, NULL, 0, 0);
}

SEC("tc")
int gwlb_decap(struct __sk_buff *skb)
{
    struct {
        __be16 h_proto;
        struct iphdr ip;
        struct udphdr udp;
        struct return_key geneve;
    } __attribute__((packed)) h;
    if (bpf_skb_load_bytes(skb, 12, &h, sizeof(h)))
        return TC_ACT_OK;
    if (h.h_proto != bpf_htons(ETH_P_IP) || h.ip.version != 4 || h.ip.ihl != 5 ||
        h.ip.protocol != IPPROTO_UDP || (h.ip.frag_off & bpf_htons(IP_MF_OFFSET)))
        return TC_ACT_OK;
    __u32 zero = 0;
    struct config *cfg = bpf_map_lookup_elem(&config, &zero);
    if (!cfg || !cfg->node_ip || h.ip.daddr != cfg->node_ip)
        return TC_ACT_OK;
    __u32 tot_len = bpf_ntohs(h.ip.tot_len);
    if (tot_len != skb->len - ETH_HLEN || bpf_ntohs(h.udp.len) != tot_len - 20 || tot_len < OUTER_LEN)
        return TC_ACT_OK;  /* trailing bytes or a lying length: let the kernel judge it */
    struct return_value *v = bpf_map_lookup_elem(&returns, &h.geneve);
    if (!v) {
        count(C_DECAP_MISS);
        return TC_ACT_OK;
    }
    if (h.ip.saddr != v->target_ip ||
        (h.udp.dest != bpf_htons(GENEVE_PORT) && h.udp.dest != v->src_port)) {
        count(C_DECAP_MISMATCH);
        return TC_ACT_OK;
    }
    if (skb->gso_size) {
        count(C_DECAP_GSO);
        return TC_ACT_OK;
    }
    __u32 inner_len = tot_len - OUTER_LEN;
    if (inner_len > MAX_INNER) {
        count(C_DECAP_OVERSIZE);
        return TC_ACT_OK;
    }
    __u8 version;
    if (inner_len < 20 || bpf_skb_load_bytes(skb, ETH_HLEN + OUTER_LEN, &version, 1) ||
        (version >> 4 != 4 && version >> 4 != 6)) {
        count(C_DECAP_MALFORMED);
        return TC_ACT_OK;
    }
    if (bpf_skb_adjust_room(skb, -OUTER_LEN, BPF_ADJ_ROOM_MAC, 0)) {
        count(C_DECAP_ERROR);
        return TC_ACT_OK;  /* the frame is unchanged: the slow path can still take it */
    }
    if (bpf_skb_store_bytes(skb, 0, v->eth, 12, 0)) {
        count(C_DECAP_ERROR);
        return TC_ACT_SHOT;
    }
    __sync_fetch_and_add(&v->packets, 1);
    __sync_fetch_and_add(&v->bytes, inner_len);
    v->last_seen_ns = bpf_ktime_get_ns();
    count(C_DECAP_HIT);
    return bpf_redirect(v->endpoint_ifindex, 0);
}

/* Returns 0 (hide the frame) exactly when gwlb_encap takes it, else the whole frame.
   Frames the endpoint veth sends (decapsulated returns, the node's own writes) never
   pass tc ingress, so they are always shown. */
SEC("socket")
int gwlb_ring_filter(struct __sk_buff *skb)
{
    if (skb->pkt_type == PACKET_OUTGOING)
        return skb->len;
    struct flow_key key = {};
    if (classify_inner(skb, &key) != INNER_FAST)
        return skb->len;
    return bpf_map_lookup_elem(&flows, &key) ? 0 : skb->len;
}

char _license[] SEC("license") = "GPL";
