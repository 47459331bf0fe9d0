// SPDX-License-Identifier: MIT
/*
 * Two peers, one message: alice listens with an echo handler, bob connects to her address,
 * sends "hi" and prints the reply ("echo:hi").  Each gate runs its own loop on its own
 * thread, like two programs would.
 *
 * Build: make examples; run: build/examples/quickstart
 * (Keys go to $WARPGATE_HOME, default ~/.warpgate; test mode keeps everything on loopback.
 *  With a nickname server configured, bob could connect to "alice" instead.)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <warpgate/error.h>
#include <warpgate/gate.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static char alice_addr[2048];
static struct warp_gate *alice;

static void echo_msg(struct warp_pipe *link, const uint8_t *msg, size_t len, void *user)
{
	char reply[4096];

	if (len > sizeof(reply) - 5)
		return;
	memcpy(reply, "echo:", 5);
	memcpy(reply + 5, msg, len);
	warp_pipe_send(link, reply, len + 5);
}

/* Called once per inbound peer. */
static void echo(struct warp_pipe *link, void *user)
{
	warp_pipe_on_message(link, echo_msg, NULL);
	warp_pipe_release(link); /* the node keeps the pipe until it closes */
}

static void *alice_main(void *arg)
{
	struct warp_conf conf;

	warp_conf_test(&conf);
	alice = warp_gate_open("alice", &conf);
	pthread_mutex_lock(&lock);
	if (alice) {
		warp_gate_listen(alice, echo, NULL);
		warp_node_address_text(warp_gate_node(alice), alice_addr, sizeof(alice_addr));
	}
	pthread_cond_signal(&ready);
	pthread_mutex_unlock(&lock);
	if (alice)
		warp_gate_serve(alice, -1); /* until warp_gate_stop() */
	return NULL;
}

int main(void)
{
	struct warp_conf conf;
	struct warp_gate *bob;
	struct warp_pipe *pipe;
	const char *strategy;
	char buf[256];
	pthread_t th;
	ssize_t n;
	int err, rc = 1;

	pthread_create(&th, NULL, alice_main, NULL);
	pthread_mutex_lock(&lock);
	while (!alice_addr[0] && !alice)
		pthread_cond_wait(&ready, &lock);
	pthread_mutex_unlock(&lock);
	if (!alice) {
		fprintf(stderr, "alice: %s\n", warp_strerror(errno));
		return 1;
	}

	warp_conf_test(&conf);
	bob = warp_gate_open("bob", &conf);
	if (!bob) {
		fprintf(stderr, "bob: %s\n", warp_strerror(errno));
		goto out;
	}
	err = warp_gate_connect(bob, alice_addr, &pipe, &strategy);
	if (err) {
		fprintf(stderr, "connect: %s\n", warp_strerror(err));
		goto out;
	}
	warp_pipe_subscribe(pipe, NULL); /* WARP_SUB_ALL */
	warp_pipe_send(pipe, "hi", 2);
	n = warp_pipe_recv(pipe, WARP_SUB_ALL, buf, sizeof(buf) - 1, 5000);
	if (n >= 0) {
		buf[n] = '\0';
		printf("%s\n", buf); /* echo:hi */
		rc = 0;
	} else {
		fprintf(stderr, "recv: %s\n", warp_strerror((int)n));
	}
	warp_pipe_close_wait(pipe, 2000);
	warp_pipe_release(pipe);
out:
	warp_gate_stop(alice);
	pthread_join(th, NULL);
	warp_gate_close(bob);
	warp_gate_close(alice);
	return rc;
}
