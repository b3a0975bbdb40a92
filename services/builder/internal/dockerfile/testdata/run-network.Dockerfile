FROM busybox
RUN --network=none ip link
RUN --network=default echo
RUN --network=host --security=sandbox echo
RUN --security=sandbox echo
