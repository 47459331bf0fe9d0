// SPDX-License-Identifier: MIT
/*
 * The lower-level Node API: two test-mode nodes on one loop, one connects to the other with
 * auto_connect, a message crosses, both close.  No threads: blocking calls run the shared
 * loop, which serves both nodes.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <warpgate/connect.h>
#include <warpgate/error.h>
#include <warpgate/node.h>
#include <warpgate/pipe.h>

static struct warp_pipe *bob_pipe;

static void on_accept(struct warp_node *node, struct warp_pipe *pipe, void *user)
{
	bob_pipe = pipe;
	warp_pipe_subscribe(pipe, NULL); /* WARP_SUB_ALL */
}

static bool accepted(void *user)
{
	return bob_pipe != NULL;
}

int main(void)
{
	struct warp_conf conf;
	struct warp_loop *loop = warp_loop_new();
	struct warp_node *alice, *bob;
	struct warp_node_addr bob_addr;
	struct warp_connect_result res;
	struct warp_pipe *pipe = NULL;
	char buf[64];
	ssize_t n;
	int err, rc = 1;

	warp_conf_test(&conf);
	alice = warp_node_start(&conf, loop);
	bob = warp_node_start(&conf, loop);
	if (!alice || !bob) {
		fprintf(stderr, "node: %s\n", warp_strerror(errno));
		return 1;
	}
	warp_node_on_accept(bob, on_accept, NULL);
	warp_node_address(bob, &bob_addr);

	err = warp_auto_connect(alice, &bob_addr, NULL, &pipe, &res);
	if (err) {
		fprintf(stderr, "auto_connect: %s\n", warp_strerror(err));
		goto out;
	}
	printf("connected by %s (%s) in %.2f ms\n", res.strategy, warp_path_class_name(res.path),
	       res.ms);
	warp_loop_run_until(loop, accepted, NULL, 5000);
	warp_pipe_send(pipe, "hi", 2);
	n = warp_pipe_recv(bob_pipe, WARP_SUB_ALL, buf, sizeof(buf) - 1, 5000);
	if (n < 0) {
		fprintf(stderr, "recv: %s\n", warp_strerror((int)n));
		goto out;
	}
	buf[n] = '\0';
	printf("%s\n", buf); /* hi */
	warp_pipe_close_wait(pipe, 2000);
	rc = 0;
out:
	warp_pipe_release(pipe);
	warp_pipe_release(bob_pipe);
	warp_node_close(alice);
	warp_node_close(bob);
	warp_loop_free(loop);
	return rc;
}
