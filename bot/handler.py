"""The reply flow for one incoming message: access, clean, recall, prompt, stream the reply, queue write-back.

This is the one error boundary inside the core: a model failure becomes an apology, a store failure a
reply without memories; the exchange is queued for write-back whatever happens to the reply.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from bot.access import AccessPolicy
from bot.database import BotDatabase
from bot.errors import REPLY_FAILED
from bot.history import Turn, steady_window
from bot.llm.base import ChatMessage, GenerationParams, ModelError
from bot.llm.runner import LocalModel, ModelBusy
from bot.memories import Memories
from bot.message import IncomingMessage, ReplyTarget
from bot.prompt import build_prompt, bullet, fit_memories, in_prompt_order, shown_memories
from bot.settings import Settings
from bot.text import clean_input, strip_reasoning, truncate, without_reasoning
from bot.writeback import WritebackWorker
from memory.faults import crash_point
from memory.records import MemoryRecord
from memory.store import StoreError

_log = logging.getLogger(__name__)

EMPTY_MESSAGE = "Your message looks empty. What would you like to talk about?"
MODEL_BUSY = "I'm answering a lot of messages right now. Please try again in a minute."
NO_ANSWER = "Sorry, I don't have an answer to that."
PAUSED_NOTICE = "Learning is paused for you, so I won't remember anything new. The resume command turns it back on."


class MessageHandler:
    def __init__(
        self,
        settings: Settings,
        model: LocalModel,
        memories: Memories,
        writeback: WritebackWorker,
        db: BotDatabase,
        access: AccessPolicy,
    ) -> None:
        self._s = settings
        self._model = model
        self._memories = memories
        self._writeback = writeback
        self._db = db
        self._access = access
        self._params = GenerationParams(
            max_new_tokens=settings.model.max_new_tokens,
            temperature=settings.model.temperature,
            repetition_penalty=settings.model.repetition_penalty,
        )
        self._prompt_start_kept: bool | None = None  # see `_holds_prompt_start`

    async def handle(self, msg: IncomingMessage, reply: ReplyTarget) -> None:
        decision = await self._access.check(msg)
        if not decision.allowed:
            _log.info("not answering %s message %s: %s", msg.platform, msg.message_id, decision.reason)
            if decision.reply:
                await reply.send(decision.reply)
            return
        text, was_cut = self._prepared(msg)
        if not text:
            await reply.send(EMPTY_MESSAGE)
            return
        erasures = await self._memories.forgetting.erasures(msg.user)
        earlier = await self._memories.history.recent(msg.conversation_key, msg.user.key)
        answered = earlier[-1].reply if earlier else None  # the bot's message the user may be answering
        reply_text = ""
        try:
            async with self._model.reply_coming():  # learning gives way from here, so recall has the cores
                reply_text = await self._reply(msg, text, was_cut, earlier, reply)
        finally:
            # no forget-all, deletion or edit between the checks and the queue
            async with self._memories.locks.hold(message=msg.ref, user=msg.user.key):
                if await self._memories.forgetting.erasures(msg.user) != erasures:  # forgot everything meanwhile
                    _log.info("%s forgot everything during a reply; its message is not kept", msg.user.key)
                    await self._memories.history.forget_user(msg.user.key)
                elif await self._memories.forgetting.was_changed(msg):  # its new text, if any, is learned instead
                    _log.info("%s message %s was deleted or edited during its reply; it is not kept",
                              msg.platform, msg.message_id)
                    await self._memories.history.forget_message(msg.ref)
                else:
                    await self._queue_writeback(msg, text, reply_text, answered, reply)

    async def learn_edit(self, msg: IncomingMessage) -> None:
        """Queue an edited message's new text for learning, without a new reply. Nothing is learned where the
        bot would not answer the message or the user paused learning; refusals are logged, not said."""
        crash_point("edit.forgotten")  # its old text is forgotten (`Forgetting.editing`), the new one not queued
        decision = await self._access.check(msg, rate_limited=False)  # fixing a typo is not another message
        if not decision.allowed:
            _log.info("not learning the edit of %s message %s: %s", msg.platform, msg.message_id, decision.reason)
            return
        text, _ = self._prepared(msg)
        if not text:
            return
        async with self._memories.locks.hold(user=msg.user.key):
            if not await self._db.is_paused(msg.user.key):
                await self._writeback.submit(msg, text, "")

    def _prepared(self, msg: IncomingMessage) -> tuple[str, bool]:
        """The message text the model sees (control characters out, cut to MAX_INPUT_CHARS), and whether it was
        cut."""
        return truncate(clean_input(msg.text), self._s.model.max_input_chars)

    async def _reply(self, msg: IncomingMessage, text: str, was_cut: bool, history: list[Turn],
                     reply: ReplyTarget) -> str:
        window = steady_window(history, self._s.model.history_turns) if self._holds_prompt_start() else history
        profile, recalled = await self._recall(msg, text)
        profile, memories, later, listed = await self._memory_layout(msg, history, window, profile, recalled)
        messages = build_prompt(
            bot_name=self._s.model.bot_name,
            user_name=msg.user_name,
            text=text,
            profile=profile,
            memories=memories,
            later=later,
            listed=listed,
            history=window,
            now=msg.sent_at,
            budget=self._s.model.context_tokens - self._s.model.max_new_tokens,
            count_prompt=self._model.prompt_tokens,
        )
        # what `why` will list
        earlier = [r for records in listed for r in records]
        await self._memories.recall.note_used(msg.user, shown_memories(messages, profile + memories + earlier + later,
                                                                       msg.user_name))
        system_prompt = messages[:1]
        in_system = tuple(r.id for r in shown_memories(system_prompt, profile + memories, msg.user_name))
        note = f"\n\n(Your message was long, so I read only its first {self._s.model.max_input_chars} characters.)"
        try:
            # closed here, not when garbage is collected: the model counts this reply as running until its
            # stream ends, and write-back waits for that (a platform call failing mid-reply left it counted)
            async with reply.typing(), aclosing(self._deltas(messages, note if was_cut else "")) as deltas:
                shown = await reply.stream(deltas)
        except ModelBusy:
            await reply.send(MODEL_BUSY)
            return ""
        except ModelError:
            _log.exception("model failed answering %s message %s", msg.platform, msg.message_id)
            await reply.send(REPLY_FAILED)
            return ""
        reply_text = strip_reasoning(shown)
        shown_turns = sum(m.role == "assistant" for m in messages)
        # the lists of the turns shown (the oldest may have been cut to fit), then this message's own
        lists = [tuple(r.id for r in records) for records in listed] or [() for _ in window]
        shown_lists = zip([t.message_id for t in window[len(window) - shown_turns:]],
                          lists[len(lists) - shown_turns:], strict=True)
        own = tuple(r.id for r in shown_memories(messages[-2:-1], later, msg.user_name))
        turn = Turn(msg.user.key, text, reply_text, msg.message_id, in_system, shown_turns,
                    (*shown_lists, (msg.message_id, own)))
        await self._memories.history.add(msg.conversation_key, turn)
        return reply_text

    async def _deltas(self, messages: list[ChatMessage], note: str) -> AsyncIterator[str]:
        produced = False
        async with aclosing(self._model.stream(messages, self._params)) as pieces:
            async for delta in without_reasoning(pieces):
                if delta.strip():
                    produced = True
                yield delta
        if not produced:
            yield NO_ANSWER
        if note:
            yield note

    async def _recall(self, msg: IncomingMessage, text: str) -> tuple[list[MemoryRecord], list[MemoryRecord]]:
        """The user's profile and, within what is left of the memory budget, the memories best for `text`."""
        try:
            profile = await self._memories.recall.profile(msg)
            found = await self._memories.recall.relevant(msg, text, self._s.memory.top_k, self._s.memory.min_score)
        except StoreError as exc:
            _log.warning("recall failed for %s, answering without memories: %s", msg.user.key, exc)
            return [], []
        pinned = {record.id for record in profile}
        fitted = fit_memories([r for r in found if r.id not in pinned], self._memory_budget(profile, msg),
                              self._model.count_tokens, msg.user_name)
        return profile, fitted

    async def _memory_layout(self, msg: IncomingMessage, history: list[Turn], window: list[Turn],
                             profile: list[MemoryRecord], recalled: list[MemoryRecord]
                             ) -> tuple[list[MemoryRecord], list[MemoryRecord], list[MemoryRecord],
                                        list[list[MemoryRecord]]]:
        """The profile and the memories of the system prompt, the memories that come just before the message, and
        those listed before each turn of `window` (none: the turns come without lists).

        With a backend that reuses the start of its last prompt, a conversation's prompt is its last prompt, that
        prompt's reply and the new message while the turns shown continue the last prompt's (`steady_window`): the
        system prompt keeps its memories, each earlier message the short list it came with, and the memories this
        message recalls that none of those show come in a short list of its own just before it. The model then
        processes only that list and the message, not the history again (first token, bench/README.md). The
        lists together get MEMORY_TOKEN_BUDGET, as the system prompt's memories do; once they have no room for what
        a message recalls, the conversation takes a new set. The memories kept are looked up again, so one
        forgotten, corrected or expired since is never shown: the conversation takes a new set then too, as it does
        when the window moves on (all after the system prompt is new then anyway).
        """
        fresh = profile, in_prompt_order(recalled, stable=self._model.reuses_prompt_prefix), [], []
        last = history[-1] if history else None
        # the turns shown are the last prompt's and its exchange: none deleted or answered alongside since
        if last is None or not last.memory_ids or [t.message_id for t in window] != [m for m, _ in last.listed] \
                or not self._holds_prompt_start():
            return fresh
        wanted = [*last.memory_ids, *(i for _, ids in last.listed for i in ids)]
        try:
            held = {r.id: r for r in await self._memories.recall.current(msg, tuple(wanted))}
        except StoreError as exc:
            _log.warning("recall failed for %s, answering without memories: %s", msg.user.key, exc)
            return [], [], [], []
        if len(held) != len(wanted):
            return fresh
        system = [held[i] for i in last.memory_ids]
        listed = [[held[i] for i in ids] for _, ids in last.listed]
        new = [r for r in profile + recalled if r.id not in held]
        room = self._memory_budget([r for records in listed for r in records], msg)
        added = fit_memories(new, room, self._model.count_tokens, msg.user_name)
        if len(added) < len(fit_memories(new, self._s.memory.token_budget, self._model.count_tokens, msg.user_name)):
            return fresh  # the lists have no room left for what this message recalls
        pinned = {r.id for r in profile}
        return [r for r in system if r.id in pinned], [r for r in system if r.id not in pinned], added, listed

    def _memory_budget(self, shown: list[MemoryRecord], msg: IncomingMessage) -> int:
        """What MEMORY_TOKEN_BUDGET leaves once `shown` are in the prompt."""
        return self._s.memory.token_budget - sum(self._model.count_tokens(bullet(r, msg.user_name) + "\n")
                                                 for r in shown)

    def _holds_prompt_start(self) -> bool:
        """Whether conversations keep their prompt's start (`_memory_layout`): on a backend that reuses prompt
        starts whose chat template takes a second system message later in the chat (some templates refuse one
        that is not first; checked once)."""
        if self._prompt_start_kept is None:
            self._prompt_start_kept = self._model.reuses_prompt_prefix
            if self._prompt_start_kept:
                sample = [ChatMessage("system", "s"), ChatMessage("user", "u"), ChatMessage("assistant", "a"),
                          ChatMessage("system", "s"), ChatMessage("user", "u")]
                try:
                    self._model.prompt_tokens(sample)
                except Exception as exc:  # a template's own error, of whatever type its engine raises
                    _log.warning("the model's chat template refuses a later system message (%s); every reply "
                                 "recalls into the system prompt anew", type(exc).__name__)
                    self._prompt_start_kept = False
        return self._prompt_start_kept

    async def _queue_writeback(self, msg: IncomingMessage, text: str, reply_text: str, answered: str | None,
                               reply: ReplyTarget) -> None:
        if await self._db.is_paused(msg.user.key):
            # told once per pause, and only in a DM: in a channel it would tell everyone
            if msg.is_direct and await self._db.take_pause_notice(msg.user.key):
                await reply.send(PAUSED_NOTICE)
            return
        await self._writeback.submit(msg, text, reply_text, answered)
