/*
 * tapgate-helper, native build: the qemu-bridge-helper replacement as a small C program.
 *
 * QEMU starts a bridge helper for every -netdev bridge and waits for it, so the helper's
 * start-up is paid on every NIC. The Node build of the same helper (src/cli/helper.ts) spends
 * tens of milliseconds starting Node; this one starts in about one. Both speak the same
 * protocol (src/protocol/wire.ts and messages.ts) and print the same messages, except where
 * this build checks more: an --fd that is not a socket, and invalid UTF-8 in a bridge name.
 *
 * It runs with the caller's privileges only: it asks the daemon for a tap and forwards the
 * descriptor. It reads no configuration file, so its location or invocation never changes
 * what is allowed.
 */

#define _GNU_SOURCE
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
/*
 * Replies nest three levels deep. Deeper values are rejected so that recursion stays bounded.
 * NOTE: JSON.parse() in the Node build accepts any depth, so only this build rejects a reply
 * with a value nested deeper than this in a field that neither build reads.
 */
#define MAX_JSON_DEPTH 16
#define REPLACEMENT_CHARACTER "\xef\xbf\xbd"

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

/* The pairs of a JSON short escape: the byte, then the letter after the backslash. */
static const char short_escapes[][2] = {
	{ '"', '"' }, { '\\', '\\' }, { '\b', 'b' }, { '\f', 'f' }, { '\n', 'n' }, { '\r', 'r' }, { '\t', 't' },
};

/* Returns the letter that escapes byte `c` in JSON, or 0 when it has no short escape. */
static char escape_letter(char c)
{
	for (size_t i = 0; i < sizeof(short_escapes) / sizeof(short_escapes[0]); i++)
		if (short_escapes[i][0] == c)
			return short_escapes[i][1];
	return 0;
}

/* Returns the byte that the escape letter `letter` stands for, or 0 when it is not one. */
static char escaped_byte(char letter)
{
	if (letter == '/')
		return '/';
	for (size_t i = 0; i < sizeof(short_escapes) / sizeof(short_escapes[0]); i++)
		if (short_escapes[i][1] == letter)
			return short_escapes[i][0];
	return 0;
}

/*
 * Returns the length of the UTF-8 sequence at `s` (of `available` bytes) and stores its code
 * point in `*point`, or returns 0 when it is not valid UTF-8. Then `*invalid` is the length of
 * its maximal invalid prefix, which the WHATWG Encoding Standard's decoder (Node's
 * Buffer.toString() among them) replaces with one U+FFFD before it reads the next byte.
 */
static size_t utf8_sequence(const unsigned char *s, size_t available, uint32_t *point, size_t *invalid)
{
	unsigned char low = 0x80, high = 0xbf;
	size_t length;

	*invalid = 1;
	if (s[0] < 0x80) {
		*point = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		length = 2;
		*point = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		length = 3;
		*point = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		length = 4;
		*point = s[0] & 0x07;
	} else {
		return 0;
	}
	/* These bounds on the second byte exclude overlong forms, surrogates and points past U+10FFFF. */
	if (s[0] == 0xe0)
		low = 0xa0;
	else if (s[0] == 0xed)
		high = 0x9f;
	else if (s[0] == 0xf0)
		low = 0x90;
	else if (s[0] == 0xf4)
		high = 0x8f;
	for (size_t i = 1; i < length; i++) {
		if (i >= available || s[i] < low || s[i] > high) {
			*invalid = i;
			return 0;
		}
		*point = *point << 6 | (s[i] & 0x3f);
		low = 0x80;
		high = 0xbf;
	}
	return length;
}

/*
 * Returns `value` as JSON.stringify() writes it once Node has decoded it from argv: quoted,
 * with quotes, backslashes and control bytes escaped and invalid UTF-8 as U+FFFD.
 */
static char *json_quote(const char *value)
{
	size_t bytes = strlen(value);
	/* "\u00XX" for one byte is the longest form, and U+FFFD takes 3 bytes for at least one. */
	char *out = malloc(bytes * 6 + 3);
	size_t length = 0;

	if (!out)
		fail("out of memory");
	out[length++] = '"';
	for (const unsigned char *c = (const unsigned char *)value; *c;) {
		uint32_t point;
		size_t invalid;
		size_t size = utf8_sequence(c, bytes - (size_t)((const char *)c - value), &point, &invalid);
		char letter = escape_letter((char)*c);

		if (size == 0) {
			memcpy(out + length, REPLACEMENT_CHARACTER, 3);
			length += 3;
			c += invalid;
			continue;
		}
		if (letter) {
			out[length++] = '\\';
			out[length++] = letter;
		} else if (*c < 0x20) {
			length += (size_t)sprintf(out + length, "\\u%04x", *c);
		} else {
			memcpy(out + length, c, size);
			length += size;
		}
		c += size;
	}
	out[length++] = '"';
	out[length] = '\0';
	return out;
}

/*
 * Returns whether JavaScript's \s matches `point`: the ECMAScript WhiteSpace and
 * LineTerminator code points, with Unicode's Zs category as of Unicode 15.
 */
static bool is_javascript_space(uint32_t point)
{
	switch (point) {
	case '\t': case '\n': case '\v': case '\f': case '\r': case ' ':
	case 0xa0: case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000: case 0xfeff:
		return true;
	}
	return point >= 0x2000 && point <= 0x200a;
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
				usage_error("invalid --fd value %s: expected a descriptor number", json_quote(text));
			parsed->fd = atoi(text);
			have_fd = true;
		} else {
			usage_error("unknown argument %s", json_quote(argument));
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
	char *network = json_quote(arguments->bridge);
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

struct json {
	const char *at;
	const char *end;
};

static void skip_space(struct json *json)
{
	while (json->at < json->end && (*json->at == ' ' || *json->at == '\t' || *json->at == '\n' || *json->at == '\r'))
		json->at++;
}

static bool take(struct json *json, char expected)
{
	skip_space(json);
	if (json->at < json->end && *json->at == expected) {
		json->at++;
		return true;
	}
	return false;
}

/* Consumes `literal` when the text continues with it. */
static bool take_literal(struct json *json, const char *literal)
{
	size_t length = strlen(literal);

	if ((size_t)(json->end - json->at) < length || memcmp(json->at, literal, length) != 0)
		return false;
	json->at += length;
	return true;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool read_hex4(struct json *json, uint32_t *value)
{
	*value = 0;
	if (json->end - json->at < 4)
		return false;
	for (int i = 0; i < 4; i++) {
		int digit = hex_value(*json->at++);

		if (digit < 0)
			return false;
		*value = *value << 4 | (uint32_t)digit;
	}
	return true;
}

/*
 * Appends `size` bytes to a decoded string. `*length` counts every byte, but bytes are stored
 * only while they fit in `capacity` with room for a NUL.
 */
static void append(char *out, size_t capacity, size_t *length, const char *bytes, size_t size)
{
	if (out && *length + size < capacity)
		memcpy(out + *length, bytes, size);
	*length += size;
}

/* Appends code point `point` as UTF-8. */
static void append_point(char *out, size_t capacity, size_t *length, uint32_t point)
{
	char bytes[4];
	size_t size;

	if (point < 0x80) {
		bytes[0] = (char)point;
		size = 1;
	} else if (point < 0x800) {
		bytes[0] = (char)(0xc0 | point >> 6);
		bytes[1] = (char)(0x80 | (point & 0x3f));
		size = 2;
	} else if (point < 0x10000) {
		bytes[0] = (char)(0xe0 | point >> 12);
		bytes[1] = (char)(0x80 | (point >> 6 & 0x3f));
		bytes[2] = (char)(0x80 | (point & 0x3f));
		size = 3;
	} else {
		bytes[0] = (char)(0xf0 | point >> 18);
		bytes[1] = (char)(0x80 | (point >> 12 & 0x3f));
		bytes[2] = (char)(0x80 | (point >> 6 & 0x3f));
		bytes[3] = (char)(0x80 | (point & 0x3f));
		size = 4;
	}
	append(out, capacity, length, bytes, size);
}

/*
 * Completes a \\u escape that may be the high half of a surrogate pair. JSON allows unpaired
 * surrogates; like Node writing such a string, they become U+FFFD.
 */
static uint32_t read_surrogate_pair(struct json *json, uint32_t point)
{
	uint32_t low;

	if (point < 0xd800 || point > 0xdfff)
		return point;
	if (point >= 0xdc00 || json->end - json->at < 6 || json->at[0] != '\\' || json->at[1] != 'u')
		return 0xfffd;
	struct json lookahead = { .at = json->at + 2, .end = json->end };

	if (!read_hex4(&lookahead, &low) || low < 0xdc00 || low > 0xdfff)
		return 0xfffd;
	json->at = lookahead.at;
	return 0x10000 + ((point - 0xd800) << 10) + (low - 0xdc00);
}

/* Decodes the escape after a backslash. */
static bool read_escape(struct json *json, char *out, size_t capacity, size_t *length)
{
	uint32_t point;
	char escape;

	if (json->at >= json->end)
		return false;
	escape = *json->at++;
	if (escape == 'u') {
		if (!read_hex4(json, &point))
			return false;
		point = read_surrogate_pair(json, point);
	} else {
		point = (unsigned char)escaped_byte(escape);
		if (point == 0)
			return false;
	}
	append_point(out, capacity, length, point);
	return true;
}

/*
 * Reads a string into `out` (NULL to skip it), storing its decoded length in `*length`.
 * Invalid UTF-8 decodes to U+FFFD, as Node decodes the whole body before JSON.parse().
 */
static bool read_string(struct json *json, char *out, size_t capacity, size_t *length)
{
	*length = 0;
	if (!take(json, '"'))
		return false;
	while (json->at < json->end) {
		const unsigned char *c = (const unsigned char *)json->at;
		uint32_t point;
		size_t invalid;
		size_t size;

		if (*c == '"') {
			json->at++;
			/* A truncated string is stored as "", so callers compare its length as well. */
			if (out)
				out[*length < capacity ? *length : 0] = '\0';
			return true;
		}
		if (*c < 0x20)
			return false;
		if (*c == '\\') {
			json->at++;
			if (!read_escape(json, out, capacity, length))
				return false;
			continue;
		}
		size = utf8_sequence(c, (size_t)(json->end - json->at), &point, &invalid);
		if (size == 0) {
			append(out, capacity, length, REPLACEMENT_CHARACTER, 3);
			json->at += invalid;
		} else {
			append(out, capacity, length, json->at, size);
			json->at += size;
		}
	}
	return false;
}

static size_t count_digits(const char *at, const char *end)
{
	size_t count = 0;

	while (at + count < end && at[count] >= '0' && at[count] <= '9')
		count++;
	return count;
}

/*
 * Consumes a number as JSON spells it: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
 * strtod() would also take "+1", "01", ".5", "0x10", "nan" and "inf", which JSON.parse() rejects.
 */
static bool read_number(struct json *json)
{
	const char *at = json->at;
	size_t digits;

	if (at < json->end && *at == '-')
		at++;
	digits = count_digits(at, json->end);
	if (digits == 0 || (digits > 1 && *at == '0'))
		return false;
	at += digits;
	if (at < json->end && *at == '.') {
		at++;
		digits = count_digits(at, json->end);
		if (digits == 0)
			return false;
		at += digits;
	}
	if (at < json->end && (*at == 'e' || *at == 'E')) {
		at++;
		if (at < json->end && (*at == '+' || *at == '-'))
			at++;
		digits = count_digits(at, json->end);
		if (digits == 0)
			return false;
		at += digits;
	}
	json->at = at;
	return true;
}

static bool skip_value(struct json *json, int depth);

/*
 * Calls `member` for each key of an object; the callback consumes the value. A key with a
 * NUL byte, or longer than any field the helper reads, is passed as "" so it matches none.
 */
static bool read_object(struct json *json, int depth, bool (*member)(struct json *, const char *, void *, int), void *context)
{
	char key[64];
	size_t length;

	if (depth > MAX_JSON_DEPTH || !take(json, '{'))
		return false;
	if (take(json, '}'))
		return true;
	do {
		if (!read_string(json, key, sizeof(key), &length) || !take(json, ':'))
			return false;
		if (length != strlen(key))
			key[0] = '\0';
		skip_space(json);
		if (!member(json, key, context, depth + 1))
			return false;
	} while (take(json, ','));
	return take(json, '}');
}

static bool skip_member(struct json *json, const char *key, void *context, int depth)
{
	(void)key;
	(void)context;
	return skip_value(json, depth);
}

static bool skip_value(struct json *json, int depth)
{
	size_t length;

	skip_space(json);
	if (json->at >= json->end || depth > MAX_JSON_DEPTH)
		return false;
	switch (*json->at) {
	case '{':
		return read_object(json, depth, skip_member, NULL);
	case '[':
		json->at++;
		if (take(json, ']'))
			return true;
		do {
			if (!skip_value(json, depth + 1))
				return false;
		} while (take(json, ','));
		return take(json, ']');
	case '"':
		return read_string(json, NULL, 0, &length);
	}
	return take_literal(json, "true") || take_literal(json, "false") || take_literal(json, "null") || read_number(json);
}

static bool error_member(struct json *json, const char *key, void *context, int depth)
{
	struct reply *reply = context;

	if (strcmp(key, "message") != 0)
		return skip_value(json, depth);
	free(reply->message);
	reply->message = NULL;
	if (*json->at != '"')
		return skip_value(json, depth);
	/* A decoded string is at most three times as long as its JSON text: one invalid byte becomes U+FFFD. */
	size_t capacity = (size_t)(json->end - json->at) * 3 + 1;

	reply->message = malloc(capacity);
	if (!reply->message)
		fail("out of memory");
	return read_string(json, reply->message, capacity, &reply->message_length);
}

static bool tap_member(struct json *json, const char *key, void *context, int depth)
{
	struct reply *reply = context;
	const char *start = json->at;

	if (strcmp(key, "queues") != 0)
		return skip_value(json, depth);
	reply->queues = NULL;
	if (*start != '-' && (*start < '0' || *start > '9'))
		return skip_value(json, depth);
	if (!read_number(json))
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
		reply->ok = take_literal(json, "true") ? 1 : take_literal(json, "false") ? 0 : -1;
		return reply->ok >= 0 || skip_value(json, depth);
	}
	if (strcmp(key, "op") == 0) {
		reply->op_is_open_tap = false;
		if (*json->at != '"')
			return skip_value(json, depth);
		if (!read_string(json, op, sizeof(op), &length))
			return false;
		reply->op_is_open_tap = length == strlen("open-tap") && strcmp(op, "open-tap") == 0;
		return true;
	}
	if (strcmp(key, "error") == 0) {
		free(reply->message);
		reply->message = NULL;
		if (*json->at != '{')
			return skip_value(json, depth);
		return read_object(json, depth, error_member, reply);
	}
	if (strcmp(key, "tap") == 0) {
		reply->queues = NULL;
		reply->has_tap = *json->at == '{';
		if (!reply->has_tap)
			return skip_value(json, depth);
		return read_object(json, depth, tap_member, reply);
	}
	return skip_value(json, depth);
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
	if (!read_object(&json, 0, reply_member, reply))
		not_a_reply(path);
	skip_space(&json);
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
			fail("The daemon's reply granted a tap with %.*s queues, but the request asked for 1", (int)reply->queues_length, reply->queues);
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
		fail("invalid bridge name %s: %s", json_quote(arguments.bridge), problem);
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
