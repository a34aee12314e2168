/* Bounded UDP flood for the capture benchmark: sendmmsg in batches of 64.
 * usage: udpflood DST_IP DPORT COUNT PAYLOAD_BYTES [PPS]
 * Refuses any destination outside 10.78.0.0/16 (the benchmark's own namespaces) and 127/8.
 * Each payload carries a 4-byte sequence number after "FCAP". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: %s DST DPORT COUNT PAYLOAD [PPS]\n", argv[0]); return 2; }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) return 2;
    uint32_t a = ntohl(dst.sin_addr.s_addr);
    if ((a >> 16) != ((10u << 8) | 78u) && (a >> 24) != 127u) { fprintf(stderr, "refusing %s\n", argv[1]); return 2; }
    long count = atol(argv[3]);
    int size = atoi(argv[4]);
    double pps = argc > 5 ? atof(argv[5]) : 0;
    if (count <= 0 || count > 50000000 || size < 8 || size > 1400) return 2;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) { perror("socket"); return 1; }
    static char bufs[BATCH][1500];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        memset(bufs[i], 0x5a, size);
        memcpy(bufs[i], "FCAP", 4);
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long sent = 0;
    while (sent < count) {
        int n = count - sent < BATCH ? (int)(count - sent) : BATCH;
        for (int i = 0; i < n; i++) { uint32_t s = htonl((uint32_t)(sent + i)); memcpy(bufs[i] + 4, &s, 4); }
        int r = sendmmsg(fd, msgs, n, 0);
        /* Nobody listens on the port: the peer's ICMP port-unreachable surfaces here. */
        if (r < 0 && errno == ECONNREFUSED) continue;
        if (r < 0) { perror("sendmmsg"); return 1; }
        sent += r;
        if (pps > 0) {
            for (;;) {
                clock_gettime(CLOCK_MONOTONIC, &now);
                double el = (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
                if (sent / pps <= el) break;
                struct timespec ns = {0, 20000};
                nanosleep(&ns, NULL);
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    double el = (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%ld %.6f\n", sent, el);
    return 0;
}
