/*
 * tapgate-helper, native build: the qemu-bridge-helper replacement as a small C program.
 *
 * QEMU starts a bridge helper for every -netdev bridge and waits for it, so the helper's
 * start-up is paid on every NIC. The Node build of the same helper (src/cli/helper.ts) spends
 * tens of milliseconds starting Node; this one starts as quickly as qemu-bridge-helper. Both
 * speak the same protocol (src/protocol/wire.ts and messages.ts) and print the same messages,
 * except that only this build can reject invalid UTF-8 in a bridge name (Node's argv decoding
 * has already replaced it).
 *
 * It runs with the caller's privileges only: it asks the daemon for a tap and forwards the
 * descriptor. It reads no configuration file, so its location or invocation never changes
 * what is allowed.
 */

#define _GNU_SOURCE
#include "json.h"
#include "text.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/tapgate/tapgate.sock"
#define PROTOCOL_VERSION 1
#define TIMEOUT_SECONDS 5
#define MAX_INTERFACE_NAME_BYTES 15
/* MAX_REPLY_BYTES in src/protocol/wire.ts, so both builds accept the same frames. */
#define MAX_REPLY_BYTES (4 * 1024 * 1024)
/* Linux's limit on descriptors in one SCM_RIGHTS message (SCM_MAX_FD in include/net/scm.h). */
#define SCM_MAX_FD 253

static const char usage[] =
	"Usage: tapgate-helper [--use-vnet] --br=BRIDGE --fd=UNIXFD\n"
	"\n"
	"Asks the tapgate daemon for a tap attached to BRIDGE (a bridge or a tapgate network name)\n"
	"and sends its descriptor over the Unix socket UNIXFD, as QEMU's bridge helper does.\n"
	"\n"
	"  --use-vnet     enable the virtio-net header (IFF_VNET_HDR) when the kernel offers it\n"
	"  --br=BRIDGE    bridge or network to attach the tap to\n"
	"  --fd=UNIXFD    connected Unix socket to send the tap's descriptor on\n"
	"  --help         print this help\n"
	"\n"
	"The daemon is reached at $TAPGATE_SOCKET, or " DEFAULT_SOCKET " by default.\n";

struct arguments {
	bool use_vnet;
	const char *bridge;
	int fd;
};

/*
 * The first descriptor of the reply, kept to forward, and the number that arrived in all. The
 * others are closed as they come, but counted, to report them as the Node build does.
 */
static int received_fd = -1;
static size_t received_count;

static void close_received(void)
{
	if (received_fd >= 0)
		close(received_fd);
	received_fd = -1;
}

static void fail(const char *format, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *format, ...)
{
	va_list list;

	close_received();
	fputs("tapgate-helper: ", stderr);
	va_start(list, format);
	vfprintf(stderr, format, list);
	va_end(list);
	fputc('\n', stderr);
	exit(1);
}

/* Returns `value` quoted as JSON.stringify() would; see json_quote(). */
static char *quote(const char *value)
{
	char *quoted = json_quote(value);

	if (!quoted)
		fail("out of memory");
	return quoted;
}

static void usage_error(const char *format, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *format, ...)
{
	va_list list;

	fputs("tapgate-helper: ", stderr);
	va_start(list, format);
	vfprintf(stderr, format, list);
	va_end(list);
	fprintf(stderr, "\n\n%s", usage);
	exit(1);
}

static const char *errno_name(int error)
{
#ifdef __GLIBC__
	const char *name = strerrorname_np(error);

	if (name)
		return name;
#endif
	static char number[24];

	snprintf(number, sizeof(number), "E%d", error);
	return number;
}

/* The lower-case form of strerror(), as the Node build prints it. */
static const char *errno_text(int error)
{
	static char text[128];

	snprintf(text, sizeof(text), "%s", strerror(error));
	if (text[0] >= 'A' && text[0] <= 'Z')
		text[0] = (char)(text[0] - 'A' + 'a');
	return text;
}

/*
 * Returns why `name` cannot be a Linux interface name, or NULL. The same rule as
 * interfaceNameProblem() in src/protocol/names.ts, checked here so a bad name never leaves
 * this process; the daemon checks it again. Node decodes argv with U+FFFD for invalid UTF-8,
 * so only this build can tell such a name apart and reject it.
 */
static const char *interface_name_problem(const char *name, char *buffer, size_t capacity)
{
	size_t bytes = strlen(name);

	if (bytes == 0)
		return "is empty";
	if (bytes > MAX_INTERFACE_NAME_BYTES) {
		snprintf(buffer, capacity, "is too long: %zu bytes, the maximum is %d", bytes, MAX_INTERFACE_NAME_BYTES);
		return buffer;
	}
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return "is \".\" or \"..\"";
	for (const unsigned char *c = (const unsigned char *)name; *c;) {
		uint32_t point;
		size_t invalid;
		size_t length = utf8_sequence(c, bytes - (size_t)((const char *)c - name), &point, &invalid);

		if (length == 0)
			return "is not valid UTF-8";
		if (point == '/' || point == ':' || is_javascript_space(point))
			return "contains \"/\", \":\", a NUL byte or whitespace";
		c += length;
	}
	return NULL;
}

static bool parse_arguments(int argc, char **argv, struct arguments *parsed)
{
	bool have_fd = false;

	*parsed = (struct arguments){ .fd = -1 };
	for (int i = 1; i < argc; i++) {
		const char *argument = argv[i];

		if (strcmp(argument, "--help") == 0)
			return false;
		if (strcmp(argument, "--use-vnet") == 0) {
			parsed->use_vnet = true;
		} else if (strncmp(argument, "--br=", 5) == 0) {
			parsed->bridge = argument + 5;
		} else if (strncmp(argument, "--fd=", 5) == 0) {
			const char *text = argument + 5;
			size_t digits = strspn(text, "0123456789");

			if (digits == 0 || digits > 9 || text[digits] != '\0')
				usage_error("invalid --fd value %s: expected a descriptor number", quote(text));
			parsed->fd = atoi(text);
			have_fd = true;
		} else {
			usage_error("unknown argument %s", quote(argument));
		}
	}
	if (!parsed->bridge)
		usage_error("missing --br=BRIDGE");
	if (!have_fd)
		usage_error("missing --fd=UNIXFD");
	return true;
}

/*
 * Checks that --fd is an open socket before a tap is requested, so a wrong descriptor does
 * not make the daemon create and attach a tap that is dropped at once.
 */
static void check_channel(int fd)
{
	struct stat status;

	if (fstat(fd, &status) < 0) {
		int error = errno;

		fail("--fd=%d is not an open descriptor: %s (%s); QEMU passes a connected Unix socket as --fd", fd, errno_text(error), errno_name(error));
	}
	if (!S_ISSOCK(status.st_mode))
		fail("--fd=%d is not a socket; QEMU passes a connected Unix socket as --fd", fd);
}

static void unreachable(const char *path, int error) __attribute__((noreturn));

/* The same advice as DaemonUnreachableError in src/client/client.ts. */
static void unreachable(const char *path, int error)
{
	const char *advice;

	switch (error) {
	case ENOENT:
		advice = "the socket was not found; start the daemon (\"systemctl start tapgate\" or \"tapgate daemon\") or set TAPGATE_SOCKET to its socket";
		break;
	case ECONNREFUSED:
		advice = "nothing listens there; start the daemon (\"systemctl start tapgate\" or \"tapgate daemon\")";
		break;
	case EACCES:
		advice = "this user may not open the socket or a directory above it; ask an administrator to check its permissions";
		break;
	case EAGAIN:
		advice = "the daemon sent no reply in time; see its log (\"journalctl -u tapgate\")";
		break;
	default:
		advice = "check that the daemon runs (\"systemctl status tapgate\")";
	}
	fail("Cannot reach the tapgate daemon at %s: %s (%s); %s", path, errno_text(error), errno_name(error), advice);
}

/*
 * The end of the whole exchange with the daemon. A timeout on each call alone would let a
 * daemon that sends one byte at a time keep QEMU waiting for ever.
 */
static struct timespec deadline;

static void start_deadline(void)
{
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += TIMEOUT_SECONDS;
}

/* Sets `option` (SO_RCVTIMEO or SO_SNDTIMEO) to the time left before the deadline. */
static void limit_to_deadline(int fd, int option, const char *path)
{
	struct timespec now;
	struct timeval left;
	long long microseconds;

	clock_gettime(CLOCK_MONOTONIC, &now);
	microseconds = (long long)(deadline.tv_sec - now.tv_sec) * 1000000 + (deadline.tv_nsec - now.tv_nsec) / 1000;
	/* A zero timeval means no timeout at all, so the last microsecond counts as expired. */
	if (microseconds <= 0)
		unreachable(path, EAGAIN);
	left.tv_sec = (time_t)(microseconds / 1000000);
	left.tv_usec = (suseconds_t)(microseconds % 1000000);
	if (setsockopt(fd, SOL_SOCKET, option, &left, sizeof(left)) < 0)
		unreachable(path, errno);
}

static int connect_daemon(const char *path)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(address.sun_path))
		fail("socket path %s is too long: at most %zu bytes; set TAPGATE_SOCKET to a shorter path", path, sizeof(address.sun_path) - 1);
	memcpy(address.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		unreachable(path, errno);
	/* connect() on a Unix socket waits for a backlog slot only as long as the send timeout. */
	start_deadline();
	limit_to_deadline(fd, SO_SNDTIMEO, path);
	if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0)
		unreachable(path, errno);
	return fd;
}

static void send_request(int fd, const char *path, const struct arguments *arguments)
{
	char *network = quote(arguments->bridge);
	char frame[512];
	int body;

	body = snprintf(frame + 4, sizeof(frame) - 4,
		"{\"version\":%d,\"op\":\"open-tap\",\"network\":%s,\"queues\":1,\"vnetHdr\":%s,\"macChosenByVmm\":true}",
		PROTOCOL_VERSION, network, arguments->use_vnet ? "true" : "false");
	free(network);
	if (body < 0 || (size_t)body >= sizeof(frame) - 4)
		fail("request for bridge \"%s\" is too long to send", arguments->bridge);
	frame[0] = (char)((uint32_t)body >> 24);
	frame[1] = (char)((uint32_t)body >> 16);
	frame[2] = (char)((uint32_t)body >> 8);
	frame[3] = (char)body;
	for (size_t sent = 0; sent < (size_t)body + 4;) {
		ssize_t count;

		limit_to_deadline(fd, SO_SNDTIMEO, path);
		count = send(fd, frame + sent, (size_t)body + 4 - sent, MSG_NOSIGNAL);
		if (count < 0 && errno == EINTR)
			continue;
		if (count < 0)
			unreachable(path, errno);
		sent += (size_t)count;
	}
}

/* Counts the descriptors of one message, keeping the first of the reply and closing the rest. */
static void collect_fds(struct msghdr *message)
{
	for (struct cmsghdr *control = CMSG_FIRSTHDR(message); control; control = CMSG_NXTHDR(message, control)) {
		if (control->cmsg_level != SOL_SOCKET || control->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (control->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(control) + i * sizeof(int), sizeof(int));
			if (received_count++ == 0)
				received_fd = fd;
			else
				close(fd);
		}
	}
}

/* Reads exactly `length` bytes into `buffer`, keeping any descriptors that arrive with them. */
static void receive_exactly(int fd, const char *path, char *buffer, size_t length)
{
	union {
		char bytes[CMSG_SPACE(sizeof(int) * SCM_MAX_FD)];
		struct cmsghdr align;
	} control;

	for (size_t done = 0; done < length;) {
		struct iovec part = { .iov_base = buffer + done, .iov_len = length - done };
		struct msghdr message = {
			.msg_iov = &part, .msg_iovlen = 1,
			.msg_control = control.bytes, .msg_controllen = sizeof(control.bytes),
		};
		ssize_t count;

		limit_to_deadline(fd, SO_RCVTIMEO, path);
		count = recvmsg(fd, &message, MSG_CMSG_CLOEXEC);
		if (count < 0 && errno == EINTR)
			continue;
		if (count < 0)
			unreachable(path, errno);
		collect_fds(&message);
		if (message.msg_flags & MSG_CTRUNC)
			fail("the daemon at %s sent more than %d descriptors in one message; see its log", path, SCM_MAX_FD);
		if (count == 0)
			fail("Cannot reach the tapgate daemon at %s: the daemon closed the connection without a complete reply; see its log", path);
		done += (size_t)count;
	}
}

/*
 * A reply, reduced to the fields the helper acts on. As with JSON.parse(), the last of
 * duplicate keys wins, and a field of the wrong type counts as absent.
 */
struct reply {
	int ok; /* 1, 0, or -1 when absent or not a boolean */
	bool op_is_open_tap;
	bool has_tap; /* "tap" is an object */
	const char *queues; /* the JSON text of tap.queues when it is a number, else NULL */
	size_t queues_length;
	char *message; /* error.message when it is a string (malloc'd), else NULL */
	size_t message_length;
};

static bool error_member(struct json *json, const char *key, void *context, int depth)
{
	struct reply *reply = context;

	if (strcmp(key, "message") != 0)
		return json_skip_value(json, depth);
	free(reply->message);
	reply->message = NULL;
	if (*json->at != '"')
		return json_skip_value(json, depth);
	/* A decoded string is at most three times as long as its JSON text: one invalid byte becomes U+FFFD. */
	size_t capacity = (size_t)(json->end - json->at) * 3 + 1;

	reply->message = malloc(capacity);
	if (!reply->message)
		fail("out of memory");
	return json_read_string(json, reply->message, capacity, &reply->message_length);
}

static bool tap_member(struct json *json, const char *key, void *context, int depth)
{
	struct reply *reply = context;
	const char *start = json->at;

	if (strcmp(key, "queues") != 0)
		return json_skip_value(json, depth);
	reply->queues = NULL;
	if (*start != '-' && (*start < '0' || *start > '9'))
		return json_skip_value(json, depth);
	if (!json_read_number(json))
		return false;
	reply->queues = start;
	reply->queues_length = (size_t)(json->at - start);
	return true;
}

static bool reply_member(struct json *json, const char *key, void *context, int depth)
{
	struct reply *reply = context;
	char op[16];
	size_t length;

	if (strcmp(key, "ok") == 0) {
		reply->ok = json_take_literal(json, "true") ? 1 : json_take_literal(json, "false") ? 0 : -1;
		return reply->ok >= 0 || json_skip_value(json, depth);
	}
	if (strcmp(key, "op") == 0) {
		reply->op_is_open_tap = false;
		if (*json->at != '"')
			return json_skip_value(json, depth);
		if (!json_read_string(json, op, sizeof(op), &length))
			return false;
		reply->op_is_open_tap = length == strlen("open-tap") && strcmp(op, "open-tap") == 0;
		return true;
	}
	if (strcmp(key, "error") == 0) {
		free(reply->message);
		reply->message = NULL;
		if (*json->at != '{')
			return json_skip_value(json, depth);
		return json_read_object(json, depth, error_member, reply);
	}
	if (strcmp(key, "tap") == 0) {
		reply->queues = NULL;
		reply->has_tap = *json->at == '{';
		if (!reply->has_tap)
			return json_skip_value(json, depth);
		return json_read_object(json, depth, tap_member, reply);
	}
	return json_skip_value(json, depth);
}

static void not_a_reply(const char *path) __attribute__((noreturn));

static void not_a_reply(const char *path)
{
	fail("Cannot reach the tapgate daemon at %s: the reply is not a tapgate reply; is a tapgate daemon of a matching version listening there?", path);
}

/*
 * Receives one frame and reduces it to `reply`. Fails on anything that is not a reply, with
 * the same checks as parseReply() in src/client/client.ts.
 */
static void receive_reply(int fd, const char *path, struct reply *reply)
{
	/* One byte more for a NUL, so peeking at the end of the body reads no further. */
	static char body[MAX_REPLY_BYTES + 1];
	unsigned char header[4];
	uint32_t length;

	receive_exactly(fd, path, (char *)header, sizeof(header));
	length = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 | (uint32_t)header[2] << 8 | header[3];
	if (length > MAX_REPLY_BYTES)
		fail("Cannot reach the tapgate daemon at %s: Message of %u bytes exceeds the maximum of %d bytes; is a tapgate daemon listening there?", path, length, MAX_REPLY_BYTES);
	receive_exactly(fd, path, body, length);
	body[length] = '\0';

	struct json json = { .at = body, .end = body + length };

	*reply = (struct reply){ .ok = -1 };
	if (!json_read_object(&json, 0, reply_member, reply))
		not_a_reply(path);
	json_skip_space(&json);
	if (json.at != json.end || reply->ok < 0 || (reply->ok == 0 && !reply->message))
		not_a_reply(path);
}

/* Prints the daemon's refusal whole, NUL bytes included, as the Node build prints it. */
static void refused(const struct reply *reply) __attribute__((noreturn));

static void refused(const struct reply *reply)
{
	close_received();
	fputs("tapgate-helper: ", stderr);
	fwrite(reply->message, 1, reply->message_length, stderr);
	fputc('\n', stderr);
	exit(1);
}

/* Fails unless the reply grants a one-queue tap with its one descriptor, as openTap() checks. */
static void check_grant(const char *path, const struct reply *reply)
{
	if (!reply->op_is_open_tap || !reply->has_tap || !reply->queues)
		not_a_reply(path);
	if (reply->queues_length != 1 || reply->queues[0] != '1') {
		/* JSON.parse() reads 1.0 or 1e0 as 1 too; only the value counts. */
		char *text = strndup(reply->queues, reply->queues_length);

		if (!text || strtod(text, NULL) != 1)
			fail("The daemon's reply granted a tap with %.*s queues, but the request was for 1", (int)reply->queues_length, reply->queues);
		free(text);
	}
	if (received_count != 1)
		fail("The daemon's reply carried %zu descriptors for a tap with 1 queues", received_count);
}

/* Sends the tap descriptor to QEMU as a one-byte message, as qemu-bridge-helper does. */
static void forward_fd(int channel, int tap)
{
	union {
		char bytes[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	char byte = 0;
	struct iovec part = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr message = {
		.msg_iov = &part, .msg_iovlen = 1,
		.msg_control = control.bytes, .msg_controllen = sizeof(control.bytes),
	};
	struct cmsghdr *header = CMSG_FIRSTHDR(&message);

	memset(&control, 0, sizeof(control));
	header->cmsg_level = SOL_SOCKET;
	header->cmsg_type = SCM_RIGHTS;
	header->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(header), &tap, sizeof(int));
	while (sendmsg(channel, &message, MSG_NOSIGNAL) < 0) {
		int error = errno;

		if (error == EINTR)
			continue;
		fail("sendmsg on fd %d failed: %s (%s); QEMU passes a connected Unix socket as --fd", channel, errno_text(error), errno_name(error));
	}
}

/*
 * Sets the process up as Node does at start-up, so both builds behave alike. Descriptors 0 to
 * 2 are opened on /dev/null when the caller left them closed, and SIGPIPE is ignored.
 * Otherwise the daemon's socket could take fd 2 and receive the error messages, and a closed
 * stderr pipe would kill the helper in place of its exit status 1.
 */
static void prepare_process(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		/* open() returns the lowest free descriptor, which is `fd`. */
		if (open("/dev/null", O_RDWR) < 0) {
			int error = errno;

			fail("cannot open /dev/null for closed descriptor %d: %s (%s)", fd, errno_text(error), errno_name(error));
		}
	}
	signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv)
{
	struct arguments arguments;
	struct reply reply;
	char problem_text[96];
	const char *path = getenv("TAPGATE_SOCKET");
	const char *problem;
	int fd;

	prepare_process();
	if (!parse_arguments(argc, argv, &arguments)) {
		fputs(usage, stdout);
		return 0;
	}
	problem = interface_name_problem(arguments.bridge, problem_text, sizeof(problem_text));
	if (problem)
		fail("invalid bridge name %s: %s", quote(arguments.bridge), problem);
	check_channel(arguments.fd);
	if (!path || !*path)
		path = DEFAULT_SOCKET;

	fd = connect_daemon(path);
	send_request(fd, path, &arguments);
	receive_reply(fd, path, &reply);
	close(fd);
	if (!reply.ok)
		refused(&reply);
	check_grant(path, &reply);
	forward_fd(arguments.fd, received_fd);
	close_received();
	return 0;
}
