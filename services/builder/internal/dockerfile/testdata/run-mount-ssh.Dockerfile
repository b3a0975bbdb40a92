FROM busybox
RUN --mount=type=ssh git clone x
WORKDIR /src
RUN --mount=type=ssh,id=deploy,target=agent.sock,mode=0660,uid=1000,gid=1001,required --mount=type=ssh ssh-add -l
ARG SSH_AUTH_SOCK=/elsewhere
RUN --mount=type=ssh true
