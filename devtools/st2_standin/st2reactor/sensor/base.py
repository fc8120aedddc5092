"""Stand-in for the real StackStorm module of the same name (st2reactor.sensor.base).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
"""

import abc
import time

__all__ = ["Sensor", "PollingSensor"]


class BaseSensor(object, metaclass=abc.ABCMeta):
    """
    Base Sensor class - not to be instantiated directly.
    """

    def __init__(self, sensor_service, config=None):
        self._sensor_service = sensor_service  # Deprecated in st2, kept for parity
        self.sensor_service = sensor_service
        self._config = config or {}  # Deprecated in st2, kept for parity
        self.config = self._config

    @abc.abstractmethod
    def setup(self):
        pass

    @abc.abstractmethod
    def run(self):
        pass

    @abc.abstractmethod
    def cleanup(self):
        pass

    @abc.abstractmethod
    def add_trigger(self, trigger):
        pass

    @abc.abstractmethod
    def update_trigger(self, trigger):
        pass

    @abc.abstractmethod
    def remove_trigger(self, trigger):
        pass


class Sensor(BaseSensor):
    """
    Base class to be inherited from by the passive sensors.
    """

    @abc.abstractmethod
    def run(self):
        pass


class PollingSensor(BaseSensor):
    """
    Base class to be inherited from by the active sensors.
    """

    def __init__(self, sensor_service, config=None, poll_interval=5):
        super(PollingSensor, self).__init__(sensor_service=sensor_service, config=config)
        self._poll_interval = poll_interval

    @abc.abstractmethod
    def poll(self):
        pass

    def run(self):
        while True:
            self.poll()
            time.sleep(self._poll_interval)  # st2 uses st2common.util.concurrency.sleep

    def get_poll_interval(self):
        return self._poll_interval

    def set_poll_interval(self, poll_interval):
        self._poll_interval = poll_interval
